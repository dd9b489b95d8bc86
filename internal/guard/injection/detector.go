// Package injection scores text for prompt injection: instructions that try
// to override the system prompt, impersonate roles, smuggle chat-template
// tokens or exfiltrate data.
//
// Score normalises the text (NFKC; invisible, bidi and tag characters
// stripped and reported; base64, hex and percent-encoded payloads decoded
// and rescanned), applies phrase and structure rules, and runs a small
// linear model over hashed character n-grams whose weights are trained
// offline (see cmd/train) and embedded. The result is a score in [0,1], the
// reasons, and a verdict at a threshold chosen by sensitivity or given
// explicitly. The package is pure; a Detector is safe for concurrent use.
package injection

import (
	"fmt"
	"strings"
)

// Sensitivity selects a threshold preset.
type Sensitivity string

// Sensitivity presets. Higher sensitivity flags more (lower threshold).
const (
	Low    Sensitivity = "low"
	Medium Sensitivity = "medium"
	High   Sensitivity = "high"
)

// Preset thresholds, read off the leave-one-source-out scores (`declaw
// guard eval --loso`: every source of data/injection scored by a model
// trained without it and without its upstream sets), never off in-sample
// scores: the lowest thresholds at which the macro FPR over the benign
// sources and the worst source's FPR are within 1% and 3% (low), 3% and
// 5% (medium, the bars) and 6% and 10% (high).
const (
	LowThreshold    = 0.87
	MediumThreshold = 0.81
	HighThreshold   = 0.73
)

// Threshold returns the score threshold of the preset; unknown values
// (including "") get the medium threshold.
func (s Sensitivity) Threshold() float64 {
	switch s {
	case Low:
		return LowThreshold
	case High:
		return HighThreshold
	}
	return MediumThreshold
}

// ParseSensitivity accepts "low", "medium" or "high" (empty means medium).
func ParseSensitivity(s string) (Sensitivity, error) {
	switch Sensitivity(strings.ToLower(s)) {
	case "", Medium:
		return Medium, nil
	case Low:
		return Low, nil
	case High:
		return High, nil
	}
	return "", fmt.Errorf("injection: unknown sensitivity %q (want low, medium or high)", s)
}

// Options control one Score call. The zero value means medium sensitivity.
type Options struct {
	Sensitivity Sensitivity
	// Threshold, when in (0,1], overrides the sensitivity preset.
	Threshold float64
}

// threshold resolves the effective threshold.
func (o Options) threshold() float64 {
	if o.Threshold > 0 && o.Threshold <= 1 {
		return o.Threshold
	}
	return o.Sensitivity.Threshold()
}

// Result is the outcome of Score.
type Result struct {
	Score     float64  `json:"score"`
	Verdict   bool     `json:"verdict"`
	Threshold float64  `json:"threshold"`
	Reasons   []string `json:"reasons,omitempty"`
	// ModelScore and RuleScore are the two components of Score.
	ModelScore float64 `json:"model_score"`
	RuleScore  float64 `json:"rule_score"`
	// Normalized reports what normalisation removed or decoded.
	Normalized Normalized `json:"normalized"`
}

// Detector holds the model. The zero value uses rules only.
type Detector struct {
	Model *Model
}

// New returns a Detector using the embedded model.
func New() (*Detector, error) {
	m, err := Embedded()
	if err != nil {
		return nil, err
	}
	return &Detector{Model: m}, nil
}

// maxDepth bounds recursive decoding of encoded payloads.
const maxDepth = 2

// Score scores text.
func (d *Detector) Score(text string, opts Options) Result {
	res := d.score(text, 0)
	if !res.Normalized.Changed {
		res.Normalized.Text = "" // the input itself; not repeated in results
	}
	res.Threshold = opts.threshold()
	res.Verdict = res.Score >= res.Threshold
	return res
}

func (d *Detector) score(text string, depth int) Result {
	n := Normalize(text)
	lower := strings.ToLower(n.Text)
	var res Result
	res.Normalized = n
	windows := d.Model.Windows(lower)
	res.ModelScore = d.Model.MaxProb(windows)
	var reasons []string
	// Phrase rules have positions: their evidence is combined (noisy-or)
	// with the model's probability for the windows around the match only,
	// so a weak rule hit and an unrelated model peak far away in a long
	// document do not add up. Position-free signals (hidden characters,
	// decoded payloads) stand on their own.
	rule, local := 0.0, 0.0
	for i, h := range matchRules(lower) {
		reasons = append(reasons, fmt.Sprintf("rule:%s %q", h.name, clip(h.match, 80)))
		if i == 0 || h.weight > rule {
			rule = max(rule, h.weight)
		} else {
			rule = min(0.99, rule+0.03)
		}
		lo, hi := WindowsAt(h.pos, len(windows))
		for _, p := range windows[lo:hi] {
			local = max(local, p)
		}
	}
	other := 0.0
	bump := func(w float64, reason string) {
		reasons = append(reasons, reason)
		other = max(other, w)
	}
	if n.Tags > 0 {
		bump(0.9, fmt.Sprintf("hidden:%d unicode tag characters (ASCII smuggling)", n.Tags))
	}
	if n.Bidi > 0 {
		bump(0.6, fmt.Sprintf("hidden:%d bidi control characters", n.Bidi))
	}
	if n.Invisible > 0 {
		// Zero-width joiners and spaces are common in emoji sequences
		// and pasted web text: alone they are weak evidence (below every
		// preset), reported as a reason.
		bump(0.3, fmt.Sprintf("hidden:%d invisible characters", n.Invisible))
	}
	if depth < maxDepth {
		for _, p := range n.Decoded {
			sub := d.score(p.Text, depth+1)
			if sub.Score >= 0.5 {
				bump(sub.Score, fmt.Sprintf("decoded:%s payload scored %.2f", p.Encoding, sub.Score))
				reasons = append(reasons, prefixAll("  in "+p.Encoding+": ", sub.Reasons)...)
			}
		}
	}
	if res.ModelScore >= 0.5 {
		reasons = append(reasons, fmt.Sprintf("model:%.2f", res.ModelScore))
	}
	res.RuleScore = max(rule, other)
	res.Score = max(ModelOnlyWeight*res.ModelScore, 1-(1-rule)*(1-local), other)
	res.Reasons = reasons
	return res
}

func prefixAll(p string, ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = p + s
	}
	return out
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// ModelOnlyWeight scales the model when no rule fired near its peak:
// Score = max(ModelOnlyWeight*model, noisy-or(rules, model near the
// match), hidden/decoded signals). The three-file model of earlier rounds
// overreacted to words such as "instructions" in technical prose and was
// discounted (0.8); the model trained on every source is not: at the
// presets leave-one-source-out implies, 1.0 gives macro TPR 0.692 at
// medium against 0.658 with 0.8 (docs/guard.md).
const ModelOnlyWeight = 1.0

// Message is one chat message: its role (system, user, assistant, tool,
// function, developer) and text.
type Message struct {
	Role    string `json:"role" yaml:"role"`
	Content string `json:"content" yaml:"content"`
	Name    string `json:"name,omitempty" yaml:"name"`
}

// ScoredRole reports whether messages of a role are scored. System and
// developer messages are the operator's own configuration, and assistant
// messages the model's output: an injection reaches the model through
// user turns and through untrusted content (tool and function results,
// retrieved documents). Unknown roles are scored.
func ScoredRole(role string) bool {
	switch strings.ToLower(role) {
	case "system", "developer", "assistant", "model":
		return false
	}
	return true
}

// UntrustedRole reports whether a role carries third-party content (tool
// and function results) rather than the user's own words.
func UntrustedRole(role string) bool {
	switch strings.ToLower(role) {
	case "tool", "function", "ipython", "tool_result":
		return true
	}
	return false
}

// ScoreMessages scores a chat message by message: each message of a
// scored role (ScoredRole) on its own, so an instruction hidden in the
// middle of a long tool result is judged by the windows around it and not
// diluted by the rest of the chat. The result is the highest-scoring
// message's, with the index of that message (-1 when no message is
// scored; the Result is then clean).
func (d *Detector) ScoreMessages(msgs []Message, opts Options) (Result, int) {
	best, at := Result{}, -1
	for i, m := range msgs {
		if !ScoredRole(m.Role) {
			continue
		}
		r := d.Score(m.Content, opts)
		if at < 0 || r.Score > best.Score {
			best, at = r, i
		}
	}
	if at < 0 {
		best.Threshold = opts.threshold()
	}
	return best, at
}
