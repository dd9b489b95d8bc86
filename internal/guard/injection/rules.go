package injection

import (
	"math/bits"
	"regexp"
	"strings"
)

// rule is a phrase or structure pattern. Its expression is anchored and
// runs only where one of its triggers starts (a whole lower-case word, or a
// punctuation prefix such as "<|"), on a short window, so scanning costs
// one pass over the text plus a few anchored matches.
type rule struct {
	name     string
	weight   float64
	words    []string // word triggers (whole words, lower case)
	prefixes []string // punctuation-led triggers
	// lineStart requires the trigger to begin a line.
	lineStart bool
	// needs, when set, lists substrings one of which must occur in the
	// window before the expression runs (a cheap second prefilter).
	needs []string
	// window overrides ruleWindow.
	window int
	re     *regexp.Regexp
	// unless, when set, vetoes a match: it is searched in the matched text
	// and the unlessTail bytes after it (benign structures that share the
	// rule's words, such as "the secret to a flaky crust").
	unless *regexp.Regexp
}

// unlessTail is how far past a match a rule's unless expression looks.
const unlessTail = 24

// ruleWindow bounds the text an anchored expression sees; rules whose
// matches are short set a smaller window (the backtracking matcher's cost
// grows with the window, and common trigger words such as "you" run their
// rule often).
const ruleWindow = 240

func anchored(expr string) *regexp.Regexp { return regexp.MustCompile(`^(?:` + expr + `)`) }

var (
	overrideVerbs   = []string{"ignore", "ignoring", "disregard", "disregarding", "forget", "forgetting", "skip", "override", "bypass", "overlook", "neglect", "abandon", "discard", "drop", "erase", "delete", "remove", "stop", "do", "don", "dont", "no"}
	overrideObjects = []string{"instruction", "prompt", "directive", "rule", "guideline", "command", "context", "task", "order", "constraint", "restriction", "programming", "message", "conversation", "polic", "guardrail", "filter", "safeguard", "setting", "limitation", "training"}
	// Strong verbs take any determiner ("ignore all instructions"); weak
	// verbs, common in technical prose ("remove these settings", "override
	// the rule"), need an adjective of the "previous" family, as in
	// Rebuff's grammar.
	overrideNouns = `(?:instructions?|prompts?|directives?|rules?|guidelines?|commands?|context|tasks?|orders?|constraints?|restrictions?|programming|messages?|conversation|policies|policy|guardrails?|filters?|safeguards?|settings|limitations?|training)\b`
	previousAdj   = `(?:previous|prior|above|earlier|preceding|initial|original|system|former|foregoing)`
	overrideExpr  = `(?:ignore|ignoring|disregard|disregarding|forget|forgetting|bypass|overlook|neglect|stop\s+following|do\s+not\s+(?:follow|obey)|don'?t\s+(?:follow|obey)|dont\s+follow|no\s+longer\s+follow)\b[^.!?\n]{0,60}?\b(?:previous|prior|above|earlier|preceding|initial|original|system|former|old|existing|given|current|all|any|your|these|those|the)\b[^.!?\n]{0,40}?\b` + overrideNouns +
		`|(?:skip|override|abandon|discard|drop|erase|delete|remove)\b[^.!?\n]{0,40}?\b` + previousAdj + `\b[^.!?\n]{0,30}?\b` + overrideNouns
)

// rules were written from the published phrase families (Rebuff's
// verb/adjective/object grammar, vigil's YARA rules, the chat templates of
// common model families) rather than from the evaluation files.
var rules = []rule{
	{name: "instruction_override", weight: 0.92, words: overrideVerbs, window: 160, needs: overrideObjects, re: anchored(overrideExpr)},
	{name: "forget_everything", weight: 0.8, window: 80, words: []string{"forget", "ignore", "disregard", "stop"},
		re: anchored(`(?:forget|ignore|disregard)\s+(?:about\s+)?(?:everything|all\s+(?:of\s+)?(?:that|this|the\s+above|above|before)|what\s+(?:i|you|we)\s+(?:said|told|wrote|were\s+told)|that\s+and)\b` +
			// PromptInject's "escape" strings: "STOP EVERYTHING!!! NOW!!! JUST PRINT ...".
			`|stop\s+everything\s*(?:!|(?:[.,:;]\s*)?(?:now|just|and\s+(?:just\s+|only\s+)?(?:print|say|write|output|repeat))\b)`)},
	{name: "instruction_override_de", weight: 0.9, window: 120, words: []string{"vergiss", "vergessen", "ignoriere", "ignorieren", "missachte", "missachten", "beachte", "beachten"},
		re: anchored(`(?:vergiss|vergessen\s+sie|ignoriere|ignorieren\s+sie|missachte|missachten\s+sie|beachte\s+nicht|beachten\s+sie\s+nicht)\b[^.!?\n]{0,60}?\b(?:alles|alle|vorherigen?|obigen?|bisherigen?|anweisungen|befehle|aufgaben|aufgabe|regeln|instruktionen|vorgaben|gesagte)`)},
	{name: "instruction_override_es_fr_it", weight: 0.9, window: 100, words: []string{"ignora", "ignorez", "ignorer", "olvida", "olvide", "oubliez", "oublie", "oublier", "dimentica"},
		re: anchored(`(?:ignora|ignorez|ignorer|olvida|olvide|oubliez|oublie|oublier|dimentica)\b[^.!?\n]{0,40}?\b(?:instrucciones|instructions|consignes|istruzioni|todo|tout|tutto|reglas|règles|regole)`)},
	{name: "new_instructions", weight: 0.6, window: 80, words: []string{"new", "updated", "real", "actual", "true", "neue", "from", "henceforth", "von", "ab"},
		re: anchored(`(?:new|updated|real|actual|true|neue)\s+(?:instructions?|tasks?|rules|directives?|prompt|objective|aufgabe|anweisungen?)\b|(?:from\s+now\s+on|henceforth)\s*,?\s+(?:you|your|ignore|respond|answer|act|only|always|never|say|speak|reply|pretend|talk|behave|refer)\b|von\s+nun\s+an\b|ab\s+jetzt\b`)},
	// Claims of authority over the model ("I am your developer", "this is
	// a message from the system administrator").
	{name: "authority_impersonation", weight: 0.6, window: 80, needs: []string{"developer", "creator", "admin", "owner", "operator", "programmer", "system", "openai", "anthropic"}, words: []string{"i", "this", "message", "note", "update", "instruction", "instructions", "im"},
		re: anchored(`(?:(?:i\s+am|i'm|im)\s+(?:your|the)|this\s+is\s+your)\s+(?:developer|creator|admin|administrator|system\s+administrator|owner|operator|programmer)s?\b|(?:message|note|instructions?|update)\s+from\s+(?:the\s+|your\s+)?(?:system|developers?|admin|administrator|openai|anthropic|creators?)\b`)},
	// Role reassignment: the model's identity is replaced ("you are now",
	// "you are no longer"). A persona request ("act as a travel guide",
	// "pretend to be", "let's role-play") is how people ordinarily ask for
	// a style of answer: it is only a reason (weight 0.1), which adds
	// little to model evidence around it and never flags alone.
	{name: "role_reassignment", weight: 0.55, window: 80, words: []string{"you", "du"},
		re: anchored(`you\s+are\s+(?:now|no\s+longer|going\s+to\s+(?:be|act|pretend))|you're\s+(?:now|no\s+longer)|you\s+will\s+now\s+(?:act|be|respond)|du\s+bist\s+(?:jetzt|nun|ab\s+sofort)`)},
	{name: "persona_request", weight: 0.1, window: 80, words: []string{"act", "behave", "respond", "pretend", "roleplay", "role", "simulate", "impersonate", "tu", "agiere", "spiele", "spiel"},
		re: anchored(`(?:act|behave|respond)\s+(?:as|like)\s+(?:a|an|my)\b|act\s+as\s+if\b|pretend\s+(?:to\s+be|you\s+are|that\s+you)|roleplay\b|role-play\b|role\s+play\b|simulate\b|impersonate\b|tu\s+so\s+als|agiere\s+als|spiele?\s+die\s+rolle`)},
	{name: "jailbreak_persona", weight: 0.75, window: 80, words: []string{"dan", "stan", "aim", "dude", "betterdan", "anti", "antigpt", "developer", "god", "opposite", "jailbreak", "jailbroken", "do", "unfiltered", "uncensored", "no", "without", "evil"},
		re: anchored(`(?:dan|stan|aim|dude|betterdan|anti-?gpt)\b(?:\s+mode|\s+which\s+stands|\s*[:,(]|\s+is\s+an?\b)|(?:developer\s+mode|god\s+mode|opposite\s+mode|jailbr(?:eak|oken)|do\s+anything\s+now|(?:unfiltered|uncensored)\b[^.!?\n]{0,30}?\b(?:ai|chatbot|bot|assistant|model|mode|gpt|llm|responses?|answers?|replies|version|persona|character|output)|(?:no|without(?:\s+any)?)\s+(?:restrictions|limitations|filters?|censorship|ethical|moral)|evil\s+(?:ai|assistant|bot|mode|confidant))\b`),
		// A phone's or browser's developer mode.
		unless: regexp.MustCompile(`^developer\s+mode\s+(?:on|in|for|of)\s+(?:[a-z]+\s+){0,3}?(?:android|iphone|ios|phones?|tablets?|devices?|browsers?|chrome|firefox|edge|safari|windows|mac|macos|laptops?|pc|computers?|consoles?|xbox|playstation|tv|router|pixel|samsung|apps?)\b`)},
	// Policy evasion, the common core of jailbreak templates (the DAN /
	// developer-mode / "AIM" family published on jailbreakchat and in the
	// JailbreakHub collection): a model that is "not bound by" rules or
	// "ignores OpenAI's content policy", "never refuses", has "broken free
	// of the typical confines of AI", and is told to "stay in character".
	{name: "policy_evasion", weight: 0.75, window: 100, needs: []string{"polic", "guideline", "rules", "restriction", "limitation", "filter", "ethic", "moral", "refuse", "confines", "character", "censor"},
		words: []string{"ignore", "ignores", "ignoring", "bypass", "bypasses", "break", "breaks", "violate", "violates", "not", "doesn", "does", "don", "do", "no", "never", "you", "it", "he", "she", "free", "freed", "broken", "released", "stay", "without", "unbound"},
		re: anchored(`(?:ignores?|ignoring|bypass(?:es)?|break(?:s|ing)?|violat(?:e|es|ing))\s+(?:all\s+(?:of\s+)?)?(?:the\s+|its\s+|your\s+|any\s+)?(?:openai|anthropic|content|usage|safety|ethical|moral)(?:'s)?\s+(?:content\s+|usage\s+)?(?:polic(?:y|ies)|guidelines?|rules|restrictions|filters?|principles)` +
			`|(?:not|never|no\s+longer)\s+(?:bound|restricted|limited|constrained|held)\s+by\s+(?:any\s+)?(?:of\s+)?(?:the\s+)?(?:openai|rules|restrictions|limitations|guidelines|polic(?:y|ies)|ethics|morals|ethical|moral|filters|censorship)` +
			`|(?:doesn'?t|does\s+not|don'?t|do\s+not|never|no\s+longer)\s+(?:have\s+to\s+|need\s+to\s+)?(?:follow|abide\s+by|adhere\s+to|comply\s+with|care\s+about|obey|respect)\s+(?:any\s+)?(?:of\s+)?(?:the\s+)?(?:openai|anthropic|content|usage|safety|ethical|moral)(?:'s)?\s+(?:content\s+)?(?:polic(?:y|ies)|guidelines?|rules|restrictions|principles)` +
			`|(?:you|it|he|she)\s+(?:will\s+|shall\s+|must\s+|should\s+|can\s+)?(?:never|not|cannot|can'?t|won'?t)\s+(?:ever\s+)?refuse\b` +
			`|(?:free|freed|broken\s+free|released|unbound)\s+(?:from|of)\s+(?:the\s+)?(?:typical|usual|normal)\s+(?:confines|restrictions|limitations|rules)\b` +
			`|(?:broken\s+free|freed)\s+(?:from|of)\s+(?:the\s+|all\s+|any\s+|its\s+|your\s+)?(?:confines|restrictions|limitations|shackles|chains|censorship)\b` +
			`|free\s+(?:from|of)\s+(?:the\s+)?(?:confines|shackles|chains|censorship)\b` +
			`|stay\s+in\s+character\s*!` +
			`|without\s+(?:any\s+)?(?:moral|ethical)\s+(?:or\s+(?:moral|ethical)\s+)?(?:guidelines|constraints|boundaries|restrictions|limits|considerations)`)},
	{name: "prompt_extraction", weight: 0.8, window: 120, needs: []string{"prompt", "instruction", "message", "text", "rules", "guideline", "directive", "programming", "configuration", "password", "passphrase", "secret", "key", "above", "anweisung", "passwort", "regeln"}, words: []string{"reveal", "show", "print", "output", "display", "repeat", "tell", "give", "share", "list", "spell", "write", "say", "provide", "leak", "dump", "disclose", "recite", "what", "zeig", "zeige", "gib", "nenne", "verrate", "sag"},
		re: anchored(`(?:reveal|show|print|output|display|repeat|tell|give|share|list|spell|write|say|provide|leak|dump|disclose|recite|what\s+(?:is|are|was|were)|zeige?|gib|nenne|verrate|sag)\b[^.!?\n]{0,50}?\b(?:(?:system|initial|original|hidden|secret|first|previous|above|entire|full|complete)\s+(?:prompt|instructions?|message|text)|your\s+(?:system\s+)?(?:instructions|prompt|rules|guidelines|directives|programming|configuration)|(?:the|my)\s+system\s+prompt|(?:the|your|secret|hidden)\s+(?:password|passphrase|secret)|(?:your|secret|hidden)\s+key|(?:text|words|everything|all)\s+above|prompt\s+texts?|dein(?:e|en)?\s+(?:anweisungen|prompt|passwort|regeln)|das\s+passwort)\b`),
		// Questions about the concept ("what is a system prompt") and
		// secrets of a craft ("the secret to a flaky crust").
		unless: regexp.MustCompile(`\b(?:an?|between)\s+system\s+prompts?\b|\bsecret\s+(?:to|of|for|behind|ingredients?|recipe|sauce|spice)\b`)},
	{name: "chat_template_token", weight: 0.92, prefixes: []string{"<|", "[inst]", "[/inst]", "<<sys>>", "<</sys>>", "###", "{{#system", "[system](", "<system>", "</system>", "<im_start>", "<start_of_turn>", "<end_of_turn>"},
		re: anchored(`<\|(?:im_start|im_end|im_sep|system|user|assistant|start|end|message|channel|endoftext|begin_of_text|end_of_text|start_header_id|end_header_id|eot_id|eom_id|fim_prefix|pad)\|>|\[/?inst\]|<</?sys>>|###\s*(?:system|instruction|new\s+instruction)s?\s*:|\{\{#system~?\}\}|\[system\]\s*\(#|</?system>|<im_start>|<(?:start|end)_of_turn>`)},
	{name: "role_header", weight: 0.65, window: 80, words: []string{"system", "assistant", "human"}, lineStart: true,
		re: anchored(`(?:system|assistant|human)(?:\s+(?:message|prompt))?\s*:`)},
	{name: "role_header", weight: 0.65, window: 80, prefixes: []string{"[system", "(system"},
		re: anchored(`[\[(]system(?:\s+(?:message|note|override|update))?[\])]`)},
	{name: "markdown_exfiltration", weight: 0.85, prefixes: []string{"!["},
		re: anchored(`!\[[^\]\n]{0,100}\]\(\s*https?://[^)\s]{1,300}[?&][^)\s=]{1,40}=[^)\s]*\)`)},
	// The same through an HTML image or a reference-style image whose URL
	// carries a query parameter to fill in ({data}, [DATA], $secret, ...).
	{name: "markdown_exfiltration", weight: 0.85, prefixes: []string{"<img", "!["},
		re: anchored(`<img\b[^>]{0,100}\bsrc\s*=\s*["']?https?://[^"'\s>]{1,300}[?&][^"'\s>=]{1,40}=[^"'\s>]*|!\[[^\]\n]{0,100}\]\[[^\]\n]{0,40}\]`)},
	{name: "exfiltration_instruction", weight: 0.7, window: 200, needs: []string{"http", "url", "webhook", "endpoint", "query string"}, words: []string{"send", "exfiltrate", "leak", "forward", "post", "upload", "append", "include", "encode"},
		re: anchored(`(?:send|exfiltrate|leak|forward|post|upload|append|include|encode)\b[^.!?\n]{0,60}?\b(?:conversation|chat\s+history|previous\s+messages|user'?s?\s+data|api\s+keys?|credentials|secrets?|password|system\s+prompt)\b[^.!?\n]{0,60}?(?:https?://|\burl\b|\bwebhook\b|\bendpoint\b|\bquery\s+string\b)`)},
	{name: "tool_hijack", weight: 0.7, window: 140, needs: []string{"curl", "wget", "rm -rf", "/etc/", "bash -c", "nc -e", "base64 -d"}, words: []string{"execute", "run", "call", "invoke", "rm", "cat"},
		re: anchored(`(?:execute|run|call|invoke)\s+(?:the\s+)?(?:following\s+)?(?:command|tool|function|shell|code|script)\b[^\n]{0,80}?(?:curl|wget|rm\s+-rf|/etc/passwd|bash\s+-c|nc\s+-e|base64\s+-d)|rm\s+-rf\s+/(?:\s|$)|cat\s+/etc/(?:passwd|shadow)\b`)},
}

// wordTriggers maps trigger words to rule indices; prefixTriggers holds
// the punctuation-led triggers by first byte.
var (
	wordTriggers = func() map[string][]int {
		m := map[string][]int{}
		for i, r := range rules {
			for _, w := range r.words {
				m[w] = append(m[w], i)
			}
		}
		return m
	}()
	// triggerPairs is a bitset of the first two bytes of trigger words, a
	// cheap test before the map lookup.
	triggerPairs = func() (t [256][4]uint64) {
		for w := range wordTriggers {
			c1 := byte(0)
			if len(w) > 1 {
				c1 = w[1]
			}
			t[w[0]][c1>>6] |= 1 << (c1 & 63)
		}
		return t
	}()
	prefixTriggers = func() (t [256][]prefixTrigger) {
		for i, r := range rules {
			for _, p := range r.prefixes {
				t[p[0]] = append(t[p[0]], prefixTrigger{p, i})
			}
		}
		return t
	}()
)

type prefixTrigger struct {
	prefix string
	rule   int
}

// needsAC finds every rule's needed words in one pass.
var needsAC = func() *acMatcher {
	var pats []string
	var groups []uint32
	idx := map[string]int{}
	for ri, r := range rules {
		for _, n := range r.needs {
			k, ok := idx[n]
			if !ok {
				k = len(pats)
				idx[n] = k
				pats = append(pats, n)
				groups = append(groups, 0)
			}
			groups[k] |= 1 << uint(ri)
		}
	}
	if len(pats) == 0 {
		return nil
	}
	return newAC(pats, groups)
}()

// bits32 returns the index of the lowest set bit of b (b != 0).
func bits32(b uint32) int { return bits.TrailingZeros32(b) }

// ruleHit is a matched rule and the matched text.
type ruleHit struct {
	name   string
	weight float64
	match  string
	pos    int // byte offset of the match in the scanned text
}

func wordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

// maxTriggerWord is the longest trigger word.
const maxTriggerWord = 12

// matchRules finds, for each rule, its first match in lower (lower-cased
// text), walking the text once.
func matchRules(lower string) []ruleHit {
	var hits []ruleHit
	var done [32]bool
	// ends[ri] lists where rules[ri]'s needed words end, found in one
	// Aho-Corasick pass; ptr[ri] walks it as triggers advance.
	var ends [32][]int32
	var ptr [32]int
	if needsAC != nil {
		needsAC.scan(lower, func(bits uint32, end int) {
			for bits != 0 {
				ri := bits32(bits)
				bits &= bits - 1
				ends[ri] = append(ends[ri], int32(end))
			}
		})
	}
	hasNeed := func(ri, p, hi int) bool {
		e := ends[ri]
		k := ptr[ri]
		for k < len(e) && int(e[k]) <= p {
			k++
		}
		ptr[ri] = k
		return k < len(e) && int(e[k]) <= hi
	}
	try := func(ri, p int) {
		if done[ri] {
			return
		}
		r := &rules[ri]
		if r.lineStart && !atLineStart(lower, p) {
			return
		}
		w := r.window
		if w == 0 {
			w = ruleWindow
		}
		hi := min(len(lower), p+w)
		if r.needs != nil && !hasNeed(ri, p, hi) {
			return
		}
		if loc := r.re.FindStringIndex(lower[p:hi]); loc != nil {
			if r.unless != nil && r.unless.MatchString(lower[p:min(len(lower), p+loc[1]+unlessTail)]) {
				return
			}
			done[ri] = true
			hits = append(hits, ruleHit{name: r.name, weight: r.weight, match: lower[p : p+loc[1]], pos: p})
		}
	}
	n := len(lower)
	for i := 0; i < n; {
		c := lower[i]
		if wordByte(c) {
			j := i + 1
			for j < n && wordByte(lower[j]) {
				j++
			}
			c1 := byte(0)
			if j-i > 1 {
				c1 = lower[i+1]
			}
			if j-i <= maxTriggerWord && triggerPairs[c][c1>>6]&(1<<(c1&63)) != 0 {
				if rs, ok := wordTriggers[lower[i:j]]; ok {
					for _, ri := range rs {
						try(ri, i)
					}
				}
			}
			i = j
			continue
		}
		for _, pt := range prefixTriggers[c] {
			if strings.HasPrefix(lower[i:], pt.prefix) {
				try(pt.rule, i)
			}
		}
		i++
	}
	return hits
}

func atLineStart(s string, p int) bool {
	for p > 0 {
		p--
		switch s[p] {
		case ' ', '\t', '\r':
			continue
		case '\n':
			return true
		default:
			return false
		}
	}
	return true
}
