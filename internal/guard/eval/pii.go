// Package eval measures the guard detectors on labelled data in the
// formats of the repository's data/ folder: presidio span JSON for PII and YAML lists of
// {id, label, content} for prompt injection. Loading takes bytes; scoring
// is pure.
package eval

import (
	"encoding/json"
	"fmt"
	"sort"
	"unicode/utf8"

	"github.com/declaw/declaw/internal/guard/pii"
)

// PresidioRecord is one labelled text of a presidio-research dataset.
type PresidioRecord struct {
	FullText string         `json:"full_text"`
	Spans    []PresidioSpan `json:"spans"`
}

// PresidioSpan is a gold span; positions are code-point offsets.
type PresidioSpan struct {
	EntityType  string `json:"entity_type"`
	EntityValue string `json:"entity_value"`
	Start       int    `json:"start_position"`
	End         int    `json:"end_position"`
}

// ParsePresidio decodes a presidio span JSON file.
func ParsePresidio(data []byte) ([]PresidioRecord, error) {
	var recs []PresidioRecord
	if err := json.Unmarshal(data, &recs); err != nil {
		return nil, fmt.Errorf("parse presidio json: %w", err)
	}
	return recs, nil
}

// PresidioType maps presidio entity names to pii types; unmapped names
// (DATE_TIME, ORGANIZATION, ...) are not scored but still count against
// predictions that land on them.
func PresidioType(entity string) (pii.Type, bool) {
	switch entity {
	case "EMAIL_ADDRESS":
		return pii.Email, true
	case "PHONE_NUMBER":
		return pii.Phone, true
	case "US_SSN":
		return pii.SSN, true
	case "CREDIT_CARD":
		return pii.CreditCard, true
	case "IP_ADDRESS":
		return pii.IPAddress, true
	case "IBAN_CODE":
		return pii.IBAN, true
	case "PERSON":
		return pii.PersonName, true
	case "STREET_ADDRESS", "ADDRESS":
		return pii.Address, true
	}
	return "", false
}

// Counts are span-level confusion counts for one type.
type Counts struct {
	TP int `json:"tp"`
	FP int `json:"fp"`
	FN int `json:"fn"`
}

// Precision is TP/(TP+FP), or 1 when nothing was predicted.
func (c Counts) Precision() float64 {
	if c.TP+c.FP == 0 {
		return 1
	}
	return float64(c.TP) / float64(c.TP+c.FP)
}

// Recall is TP/(TP+FN), or 1 when there was nothing to find.
func (c Counts) Recall() float64 {
	if c.TP+c.FN == 0 {
		return 1
	}
	return float64(c.TP) / float64(c.TP+c.FN)
}

// F1 is the harmonic mean of precision and recall.
func (c Counts) F1() float64 {
	p, r := c.Precision(), c.Recall()
	if p+r == 0 {
		return 0
	}
	return 2 * p * r / (p + r)
}

// TypeScore is the result for one PII type on one file.
type TypeScore struct {
	Type      pii.Type `json:"type"`
	Gold      int      `json:"gold"`
	Counts             // embedded tp/fp/fn
	Precision float64  `json:"precision"`
	Recall    float64  `json:"recall"`
	F1        float64  `json:"f1"`
}

// Mismatch records a false positive or false negative for inspection.
type Mismatch struct {
	Kind string   `json:"kind"` // "fp" or "fn"
	Type pii.Type `json:"type"`
	Text string   `json:"text"`
	Gold string   `json:"gold,omitempty"` // the gold label a FP landed on
}

// MatchIoU is the minimum intersection-over-union (in code points) for a
// predicted span to match a gold span of the same type.
const MatchIoU = 0.5

// ScorePII runs the scanner over recs and scores the given types
// span-level: a prediction is a true positive when it overlaps an unmatched
// gold span of the same type with IoU >= MatchIoU.
func ScorePII(s *pii.Scanner, recs []PresidioRecord, types []pii.Type) ([]TypeScore, []Mismatch) {
	counts := map[pii.Type]*Counts{}
	gold := map[pii.Type]int{}
	for _, t := range types {
		counts[t] = &Counts{}
	}
	var mism []Mismatch
	for _, r := range recs {
		type g struct {
			t       pii.Type
			entity  string
			s, e    int
			matched bool
		}
		var golds []*g
		for _, sp := range r.Spans {
			t, _ := PresidioType(sp.EntityType)
			golds = append(golds, &g{t: t, entity: sp.EntityType, s: sp.Start, e: sp.End})
			if _, ok := counts[t]; ok {
				gold[t]++
			}
		}
		pos := runeOffsets(r.FullText)
		for _, p := range s.Scan(r.FullText, types) {
			ps, pe := pos[p.Start], pos[p.End]
			c := counts[p.Type]
			if c == nil {
				continue
			}
			var best *g
			bestIoU := 0.0
			landed := ""
			for _, gg := range golds {
				inter := min(pe, gg.e) - max(ps, gg.s)
				if inter <= 0 {
					continue
				}
				iou := float64(inter) / float64(max(pe, gg.e)-min(ps, gg.s))
				if gg.t == p.Type && !gg.matched && iou >= MatchIoU && iou > bestIoU {
					best, bestIoU = gg, iou
				}
				if landed == "" {
					landed = gg.entity
				}
			}
			if best != nil {
				best.matched = true
				c.TP++
				continue
			}
			c.FP++
			mism = append(mism, Mismatch{Kind: "fp", Type: p.Type, Text: p.Text, Gold: landed})
		}
		for _, gg := range golds {
			if c := counts[gg.t]; c != nil && !gg.matched {
				c.FN++
				mism = append(mism, Mismatch{Kind: "fn", Type: gg.t, Text: sliceRunes(r.FullText, gg.s, gg.e)})
			}
		}
	}
	out := make([]TypeScore, 0, len(types))
	for _, t := range types {
		c := *counts[t]
		out = append(out, TypeScore{Type: t, Gold: gold[t], Counts: c, Precision: c.Precision(), Recall: c.Recall(), F1: c.F1()})
	}
	sort.SliceStable(mism, func(i, j int) bool { return mism[i].Type < mism[j].Type })
	return out, mism
}

// runeOffsets maps each byte offset of s (0..len(s)) to a code-point offset.
func runeOffsets(s string) []int {
	pos := make([]int, len(s)+1)
	r := 0
	for i := 0; i < len(s); {
		_, w := utf8.DecodeRuneInString(s[i:])
		for k := 0; k < w; k++ {
			pos[i+k] = r
		}
		i += w
		r++
	}
	pos[len(s)] = r
	return pos
}

func sliceRunes(s string, a, b int) string {
	rs := []rune(s)
	if a < 0 || b > len(rs) || a > b {
		return ""
	}
	return string(rs[a:b])
}
