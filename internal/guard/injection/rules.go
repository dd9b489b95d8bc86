package injection

import (
	"regexp"
	"strings"
)

// rule is a phrase or structure pattern. It runs on the lower-cased,
// normalised text, only in a window around occurrences of one of its
// keywords, so the cost is bounded by the number of keyword hits.
type rule struct {
	name     string
	weight   float64
	keywords []string
	re       *regexp.Regexp
}

// ruleBefore and ruleAfter bound the window examined around a keyword.
const (
	ruleBefore = 160
	ruleAfter  = 240
	// maxHitsPerKeyword bounds the regex runs per keyword per text.
	maxHitsPerKeyword = 1024
)

var overrideVerbs = `ignore|ignoring|disregard|forget|skip|override|bypass|overlook|neglect|abandon|discard|drop|erase|delete|remove|stop following|do not follow|don't follow|dont follow|no longer follow`

// rules were written from the published phrase families (Rebuff's
// verb/adjective/object grammar, vigil's YARA rules, the chat templates of
// common model families) rather than from the evaluation files.
var rules = []rule{
	{name: "instruction_override", weight: 0.92,
		keywords: []string{"ignor", "disregard", "forget", "skip", "overrid", "bypass", "overlook", "neglect", "abandon", "discard", "drop", "erase", "delete", "remove", "follow"},
		re:       regexp.MustCompile(`\b(?:` + overrideVerbs + `)\b[^.!?\n]{0,60}?\b(?:previous|prior|above|earlier|preceding|initial|original|system|former|old|existing|given|current|all|any|your|these|those|the)\b[^.!?\n]{0,40}?\b(?:instructions?|prompts?|directives?|rules?|guidelines?|commands?|context|tasks?|orders?|constraints?|restrictions?|programming|messages?|conversation|policies|policy|guardrails?|filters?|safeguards?|settings|limitations?|training)\b`)},
	{name: "forget_everything", weight: 0.8,
		keywords: []string{"forget", "ignore", "disregard"},
		re:       regexp.MustCompile(`\b(?:forget|ignore|disregard)\s+(?:about\s+)?(?:everything|all\s+(?:of\s+)?(?:that|this|the\s+above|above|before)|what\s+(?:i|you|we)\s+(?:said|told|wrote|were told)|that\s+and)\b`)},
	{name: "instruction_override_de", weight: 0.9,
		keywords: []string{"vergiss", "vergessen", "ignorier", "missacht", "beachte"},
		re:       regexp.MustCompile(`\b(?:vergiss|vergessen\s+sie|ignoriere|ignorieren\s+sie|missachte|missachten\s+sie|beachte\s+nicht|beachten\s+sie\s+nicht)\b[^.!?\n]{0,60}?\b(?:alles|alle|vorherigen?|obigen?|bisherigen?|anweisungen|befehle|aufgaben|aufgabe|regeln|instruktionen|vorgaben|gesagte)`)},
	{name: "instruction_override_es_fr_it", weight: 0.9,
		keywords: []string{"ignor", "olvid", "oubli", "dimentic"},
		re:       regexp.MustCompile(`\b(?:ignora|ignore[zr]?|olvida|olvide|oublie[zr]?|dimentica)\b[^.!?\n]{0,40}?\b(?:instrucciones|instructions|consignes|istruzioni|todo|tout|tutto|reglas|règles|regole)`)},
	{name: "new_instructions", weight: 0.6,
		keywords: []string{"new", "updated", "real", "actual", "true", "neue", "from now on", "henceforth", "von nun an", "ab jetzt"},
		re:       regexp.MustCompile(`\b(?:(?:new|updated|real|actual|true|neue)\s+(?:instructions?|tasks?|rules|directives?|prompt|objective|aufgabe|anweisungen?)\b|from\s+now\s+on\b|henceforth\b|von\s+nun\s+an\b|ab\s+jetzt\b)`)},
	{name: "role_reassignment", weight: 0.55,
		keywords: []string{"you are", "you're", "you will", "act as", "act like", "pretend", "roleplay", "role-play", "role play", "behave", "simulate", "impersonate", "du bist", "tu so", "agiere", "spiel"},
		re:       regexp.MustCompile(`\b(?:you\s+are\s+(?:now|no\s+longer|going\s+to\s+(?:be|act|pretend))|you're\s+(?:now|no\s+longer)|you\s+will\s+now\s+(?:act|be|respond)|(?:act|behave|respond)\s+(?:as|like)\s+(?:a|an|if|my)\b|pretend\s+(?:to\s+be|you\s+are|that\s+you)|(?:roleplay|role-play|role\s+play|simulate|impersonate)\b|du\s+bist\s+(?:jetzt|nun|ab\s+sofort)|tu\s+so\s+als|agiere\s+als|spiele?\s+die\s+rolle)`)},
	{name: "jailbreak_persona", weight: 0.75,
		keywords: []string{"dan", "stan", "developer mode", "jailbr", "god mode", "do anything now", "unfiltered", "uncensored", "no restrictions", "without restrictions", "without any restrictions", "no limitations", "without limitations", "no filter", "without filter", "without censorship", "no ethical", "no moral", "evil", "opposite mode", "anti-gpt", "betterdan", "aim"},
		re:       regexp.MustCompile(`\b(?:dan|stan|aim|dude|betterdan|anti-?gpt)\b(?:\s+mode|\s+which\s+stands|\s*[:,(]|\s+is\s+an?\b)|\b(?:developer\s+mode|god\s+mode|opposite\s+mode|jailbr(?:eak|oken)|do\s+anything\s+now|unfiltered|uncensored|(?:no|without(?:\s+any)?)\s+(?:restrictions|limitations|filters?|censorship|ethical|moral)|evil\s+(?:ai|assistant|bot|mode|confidant))\b`)},
	{name: "prompt_extraction", weight: 0.8,
		keywords: []string{"prompt", "instruction", "password", "secret", "system message", "above", "rules", "guidelines", "directive", "configuration", "passwort", "anweisung"},
		re:       regexp.MustCompile(`\b(?:reveal|show|print|output|display|repeat|tell|give|share|list|spell|write|say|provide|leak|dump|disclose|recite|what\s+(?:is|are|was|were)|zeig|gib|nenne|verrate|sag)\b[^.!?\n]{0,50}?\b(?:(?:system|initial|original|hidden|secret|first|previous|above|entire|full|complete)\s+(?:prompt|instructions?|message|text)|(?:your|the|my)\s+(?:system\s+)?(?:instructions|prompt|rules|guidelines|directives|programming|configuration)|(?:the|your|secret|hidden)\s+(?:password|passphrase|secret|key)|(?:text|words|everything|all)\s+above|prompt\s+texts?|dein(?:e|en)?\s+(?:anweisungen|prompt|passwort|regeln)|das\s+passwort)\b`)},
	{name: "chat_template_token", weight: 0.92,
		keywords: []string{"<|", "[inst]", "[/inst]", "<<sys>>", "<</sys>>", "###", "{{#system", "[system]", "<system>", "</system>", "<im_start>"},
		re:       regexp.MustCompile(`<\|(?:im_start|im_end|system|user|assistant|endoftext|begin_of_text|end_of_text|start_header_id|end_header_id|eot_id|eom_id|fim_prefix|pad)\|>|\[/?inst\]|<</?sys>>|###\s*(?:system|instruction|new\s+instruction)s?\s*:|\{\{#system~?\}\}|\[system\]\s*\(#|</?system>|<im_start>`)},
	{name: "role_header", weight: 0.65,
		keywords: []string{"system:", "assistant:", "system message:", "system prompt:", "[system", "(system"},
		re:       regexp.MustCompile(`(?m)(?:^|\n)\s*(?:system|assistant|system\s+message|system\s+prompt)\s*:|[\[(]system(?:\s+(?:message|note|override|update))?[\])]`)},
	{name: "markdown_exfiltration", weight: 0.85,
		keywords: []string{"!["},
		re:       regexp.MustCompile(`!\[[^\]\n]{0,100}\]\(\s*https?://[^)\s]{1,300}[?&][^)\s=]{1,40}=[^)\s]*\)`)},
	{name: "exfiltration_instruction", weight: 0.7,
		keywords: []string{"send", "exfiltrat", "leak", "forward", "post", "upload", "append", "include", "encode"},
		re:       regexp.MustCompile(`\b(?:send|exfiltrate|leak|forward|post|upload|append|include|encode)\b[^.!?\n]{0,60}?\b(?:conversation|chat\s+history|previous\s+messages|user'?s?\s+data|api\s+keys?|credentials|secrets?|password|system\s+prompt)\b[^.!?\n]{0,60}?(?:https?://|\burl\b|\bwebhook\b|\bendpoint\b|\bquery\s+string\b)`)},
	{name: "tool_hijack", weight: 0.7,
		keywords: []string{"execute", "run ", "call the", "invoke", "curl ", "wget ", "rm -rf", "/etc/passwd"},
		re:       regexp.MustCompile(`\b(?:execute|run|call|invoke)\s+(?:the\s+)?(?:following\s+)?(?:command|tool|function|shell|code|script)\b[^\n]{0,80}?(?:curl|wget|rm\s+-rf|/etc/passwd|bash\s+-c|nc\s+-e|base64\s+-d)|\brm\s+-rf\s+/(?:\s|$)|\bcat\s+/etc/(?:passwd|shadow)\b`)},
}

// ruleHit is a matched rule and the matched text.
type ruleHit struct {
	name   string
	weight float64
	match  string
}

// matchRules runs every rule on lower (already lower-cased).
func matchRules(lower string) []ruleHit {
	var hits []ruleHit
	for i := range rules {
		r := &rules[i]
		if m, ok := r.find(lower); ok {
			hits = append(hits, ruleHit{name: r.name, weight: r.weight, match: m})
		}
	}
	return hits
}

func (r *rule) find(s string) (string, bool) {
	for _, kw := range r.keywords {
		off := 0
		for n := 0; n < maxHitsPerKeyword; n++ {
			k := strings.Index(s[off:], kw)
			if k < 0 {
				break
			}
			p := off + k
			lo, hi := p-ruleBefore, p+len(kw)+ruleAfter
			if lo < 0 {
				lo = 0
			}
			if hi > len(s) {
				hi = len(s)
			}
			if loc := r.re.FindStringIndex(s[lo:hi]); loc != nil {
				return s[lo+loc[0] : lo+loc[1]], true
			}
			// Skip past the examined window: a match within it was ruled out.
			off = max(p+len(kw), hi-ruleBefore)
			if off >= len(s) {
				break
			}
		}
	}
	return "", false
}
