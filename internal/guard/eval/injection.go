package eval

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/declaw/declaw/internal/guard/injection"
)

// Case is one labelled prompt from a YAML {id, label, content} list.
type Case struct {
	ID          string `yaml:"id" json:"id"`
	Label       string `yaml:"label" json:"label"` // "malicious" or "benign"
	Content     string `yaml:"content" json:"content"`
	Layer       string `yaml:"layer" json:"layer,omitempty"`
	Description string `yaml:"description" json:"description,omitempty"`
	// ToolCalls holds a case's mock tool calls (Parapet's outbound
	// cases); such a case is judged on the calls, not on Content.
	ToolCalls []map[string]any `yaml:"mock_tool_calls" json:"mock_tool_calls,omitempty"`
	// Messages, set instead of Content, is a chat: the injection may sit
	// in a tool result or a later user turn.
	Messages []Message `yaml:"messages" json:"messages,omitempty"`
}

// Message is one chat message of a case. TrustSpans, when set, mark the
// untrusted part of its content (code-point offsets), such as the
// retrieved document inside a tool result's wrapper text.
type Message struct {
	injection.Message `yaml:",inline"`
	TrustSpans        []TrustSpan `yaml:"trust_spans" json:"trust_spans,omitempty"`
}

// TrustSpan is an untrusted range of a message's content.
type TrustSpan struct {
	Start  int    `yaml:"start" json:"start"`
	End    int    `yaml:"end" json:"end"`
	Source string `yaml:"source" json:"source,omitempty"`
}

// Untrusted returns the text of the message's trust spans joined, or its
// whole content when it has none (or they do not fit the content).
func (m Message) Untrusted() string {
	if len(m.TrustSpans) == 0 {
		return m.Content
	}
	r := []rune(m.Content)
	var parts []string
	for _, s := range m.TrustSpans {
		if s.Start < 0 || s.End > len(r) || s.Start >= s.End {
			return m.Content
		}
		parts = append(parts, string(r[s.Start:s.End]))
	}
	return strings.Join(parts, "\n")
}

// Chat returns the case as chat messages: its Messages, or its Content as
// one user message.
func (c Case) Chat() []injection.Message {
	if len(c.Messages) > 0 {
		out := make([]injection.Message, len(c.Messages))
		for i, m := range c.Messages {
			out[i] = m.Message
		}
		return out
	}
	return []injection.Message{{Role: "user", Content: c.Content}}
}

// TrainingTexts returns the texts a case contributes to training, with its
// label. A benign case gives every message the detector scores (each one
// benign on its own). An attack given as a chat gives the text of its
// untrusted messages (tool results; their trust spans where marked) if it
// has any, else of its user turns, joined: the label says the chat holds an attack, not which
// message, and a tool-result attack's user turn ("look up the document")
// is benign.
func (c Case) TrainingTexts() []string {
	if len(c.Messages) == 0 {
		return []string{c.Content}
	}
	var scored, tool, user []string
	for _, m := range c.Messages {
		if !injection.ScoredRole(m.Role) {
			continue
		}
		// The untrusted span of a wrapped tool result, without its
		// wrapper ("Retrieved: ..."): the wrapper is one file's template,
		// in both its attacks and its benign rows.
		t := m.Untrusted()
		scored = append(scored, t)
		if injection.UntrustedRole(m.Role) {
			tool = append(tool, t)
		} else {
			user = append(user, t)
		}
	}
	if !c.Malicious() {
		return scored
	}
	if len(tool) > 0 {
		return []string{strings.Join(tool, "\n")}
	}
	if len(user) > 0 {
		return []string{strings.Join(user, "\n")}
	}
	return nil
}

// OutOfScope says why a text detector cannot judge the case, or "".
// Tool-call policy cases (layer l3_outbound, or cases carrying mock tool
// calls) are decided by which tool is called with which arguments; their
// content is a placeholder ("hello") shared by both labels.
func (c Case) OutOfScope() string {
	if c.Layer == "l3_outbound" || len(c.ToolCalls) > 0 {
		return "tool-call policy case: the label depends on mock_tool_calls, not on the text (content is a placeholder shared by both labels); belongs to an outbound tool-call policy, not a text detector"
	}
	return ""
}

// Malicious reports whether the case is labelled as an attack.
func (c Case) Malicious() bool {
	switch c.Label {
	case "malicious", "attack", "injection", "1", "true":
		return true
	}
	return false
}

// ParseCases decodes a YAML list of cases.
func ParseCases(data []byte) ([]Case, error) {
	var cs []Case
	if err := yaml.Unmarshal(data, &cs); err != nil {
		return nil, fmt.Errorf("parse cases yaml: %w", err)
	}
	return cs, nil
}

// InjectionScore is the result for one file at one sensitivity.
type InjectionScore struct {
	File        string  `json:"file"`
	Sensitivity string  `json:"sensitivity"`
	Threshold   float64 `json:"threshold"`
	Trained     bool    `json:"trained_on"`
	// OutOfScope, when set, says why the file's cases cannot be judged by
	// a text detector (every case out of scope); such rows are printed
	// but left out of the pooled rows.
	OutOfScope string `json:"out_of_scope,omitempty"`
	Malicious  int    `json:"malicious"`
	Benign     int    `json:"benign"`
	TP         int    `json:"tp"`
	FP         int    `json:"fp"`
	// TPR is TP/Malicious (null in JSON when there are no attacks).
	TPR *float64 `json:"tpr"`
	// FPR is FP/Benign (null when there are no benign cases).
	FPR *float64 `json:"fpr"`
}

// ScoreInjection scores each case once and reports TPR and FPR at every
// sensitivity preset (and at extra thresholds, labelled "custom").
func ScoreInjection(d *injection.Detector, file string, cases []Case, extra ...float64) []InjectionScore {
	scores := CaseScores(d, cases)
	trained := d.Model != nil && slices.Contains(d.Model.TrainedOn, filepath.Base(file))
	scope := ""
	for i, c := range cases {
		why := c.OutOfScope()
		if why == "" {
			scope = ""
			break
		}
		if i == 0 {
			scope = why
		}
	}
	type level struct {
		name string
		t    float64
	}
	levels := []level{{"low", injection.Low.Threshold()}, {"medium", injection.Medium.Threshold()}, {"high", injection.High.Threshold()}}
	for _, t := range extra {
		levels = append(levels, level{fmt.Sprintf("custom(%.2f)", t), t})
	}
	var out []InjectionScore
	for _, l := range levels {
		r := InjectionScore{File: filepath.Base(file), Sensitivity: l.name, Threshold: l.t, Trained: trained, OutOfScope: scope}
		for i, c := range cases {
			flagged := scores[i] >= l.t
			if c.Malicious() {
				r.Malicious++
				if flagged {
					r.TP++
				}
			} else {
				r.Benign++
				if flagged {
					r.FP++
				}
			}
		}
		if r.Malicious > 0 {
			v := float64(r.TP) / float64(r.Malicious)
			r.TPR = &v
		}
		if r.Benign > 0 {
			v := float64(r.FP) / float64(r.Benign)
			r.FPR = &v
		}
		out = append(out, r)
	}
	return out
}

// CaseScores scores each case: a chat message by message, by role
// (Detector.ScoreMessages), plain content as one user message.
func CaseScores(d *injection.Detector, cases []Case) []float64 {
	scores := make([]float64, len(cases))
	for i, c := range cases {
		r, _ := d.ScoreMessages(c.Chat(), injection.Options{})
		scores[i] = r.Score
	}
	return scores
}

// Pool sums the in-scope rows of the given split (trained or held out) per
// sensitivity into one row each, named "train (pooled)" or
// "held-out (pooled)": TPR over all attack rows, FPR over all benign rows.
func Pool(rows []InjectionScore, trained bool) []InjectionScore {
	name := "held-out (pooled)"
	if trained {
		name = "train (pooled)"
	}
	var out []InjectionScore
	idx := map[string]int{}
	for _, r := range rows {
		if r.Trained != trained || r.OutOfScope != "" {
			continue
		}
		k, ok := idx[r.Sensitivity]
		if !ok {
			k = len(out)
			idx[r.Sensitivity] = k
			out = append(out, InjectionScore{File: name, Sensitivity: r.Sensitivity, Threshold: r.Threshold, Trained: trained})
		}
		p := &out[k]
		p.Malicious += r.Malicious
		p.Benign += r.Benign
		p.TP += r.TP
		p.FP += r.FP
	}
	for i := range out {
		p := &out[i]
		if p.Malicious > 0 {
			v := float64(p.TP) / float64(p.Malicious)
			p.TPR = &v
		}
		if p.Benign > 0 {
			v := float64(p.FP) / float64(p.Benign)
			p.FPR = &v
		}
	}
	return out
}
