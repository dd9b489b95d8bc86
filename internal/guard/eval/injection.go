package eval

import (
	"fmt"
	"path/filepath"
	"slices"

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
	scores := make([]float64, len(cases))
	for i, c := range cases {
		scores[i] = d.Score(c.Content, injection.Options{}).Score
	}
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
