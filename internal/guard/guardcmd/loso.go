package guardcmd

import (
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/declaw/declaw/internal/guard/eval"
	"github.com/declaw/declaw/internal/guard/injection"
	"github.com/declaw/declaw/internal/guard/injection/corpus"
)

// A Source is one unit of leave-one-source-out evaluation: a labelled
// file of data/injection, or one `description` family of a mixed file
// (l1_mixed.yaml holds rows of a dozen public sets).
type Source struct {
	Name  string // file base name, or "file#family"
	Cases []eval.Case
	// Upstream[i] names the data set case i came from. Rows of one data
	// set can appear in several sources (a file of tool-result wrappings
	// of another file's attacks, a mixed file's rows of a set that also
	// has its own file): holding a source out holds out every row of its
	// upstream sets, wherever it appears.
	Upstream []string
}

// MixedFiles are split into sources by their rows' description family.
var MixedFiles = []string{"l1_mixed.yaml"}

// BackgroundFiles are always in training and never held out: the PII
// texts (benign prose full of numbers and names) and the data written for
// this repository: benign requests, persona requests and documents, and
// the generated attacks by mechanic with benign texts in the same carriers.
var BackgroundFiles = []string{
	"pii/presidio_synth_dataset_v2.json",
	"pii/presidio_generated_small.json",
	corpus.Prefix + "declaw_benign_requests.yaml",
	corpus.Prefix + "declaw_benign_personas.yaml",
}

var familyCut = regexp.MustCompile(`:| row \d| level=`)

// Family returns a mixed file row's source family: its description
// without the "holdout:" tag, row numbers, HackAPrompt level and model,
// and sub-categories after a colon.
func Family(desc string) string {
	d := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(desc), "holdout:"))
	if loc := familyCut.FindStringIndex(d); loc != nil {
		d = d[:loc[0]]
	}
	d = strings.TrimSpace(d)
	if d == "" {
		return "unlabelled"
	}
	return d
}

// upstreamOf names the data set a row came from: the file a "Wrapped
// FILE/ID" row wraps, the gandalf file for a mixed file's gandalf rows
// (both are Lakera's gandalf_ignore_instructions), else the source.
func upstreamOf(source string, c eval.Case) string {
	if rest, ok := strings.CutPrefix(c.Description, "Wrapped "); ok {
		if f, _, ok := strings.Cut(rest, "/"); ok {
			return f + ".yaml"
		}
	}
	if strings.Contains(source, "#gandalf_ignore_instructions") {
		return "opensource_gandalf_attacks.yaml"
	}
	return source
}

// InjectionFiles lists the YAML case files under data/injection (relative
// to data, sorted).
func InjectionFiles(data string) ([]string, error) {
	var files []string
	root := filepath.Join(data, "injection")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			rel, err := filepath.Rel(data, p)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	slices.Sort(files)
	return files, err
}

// LoadSources reads every injection file of data (paths relative to
// data) into sources, leaving out tool-call policy cases (not text) and
// splitting MixedFiles by family.
func LoadSources(data string, files []string) ([]Source, error) {
	var out []Source
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(data, f))
		if err != nil {
			return nil, err
		}
		cs, err := eval.ParseCases(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		base := filepath.Base(f)
		mixed := slices.Contains(MixedFiles, base)
		idx := map[string]int{}
		for _, c := range cs {
			if c.OutOfScope() != "" {
				continue
			}
			name := base
			if mixed {
				name = base + "#" + Family(c.Description)
			}
			k, ok := idx[name]
			if !ok {
				k = len(out)
				idx[name] = k
				out = append(out, Source{Name: name})
			}
			out[k].Cases = append(out[k].Cases, c)
			out[k].Upstream = append(out[k].Upstream, upstreamOf(name, c))
		}
	}
	return out, nil
}

// LOSOResult is one held-out source's case scores.
type LOSOResult struct {
	Source    string
	Scores    []float64 // per case, by a model that never saw the source
	Malicious []bool
	// Train is the number of training examples of the fold's model.
	Train int
}

// LOSO scores every source with a model trained on everything else:
// the other sources, minus every row of the held-out source's upstream
// sets and every text equal to one of its texts, plus the background
// examples (backgroundGroup[i] numbers example i's file). Examples are
// weighted by source (WeightSources). workers models train at once.
func LOSO(srcs []Source, background []injection.Example, backgroundGroup []int, cfg injection.TrainConfig, workers int) []LOSOResult {
	res := make([]LOSOResult, len(srcs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(1, workers))
	for h := range srcs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			held := srcs[h]
			up := map[string]bool{}
			texts := map[string]bool{}
			for i, c := range held.Cases {
				up[held.Upstream[i]] = true
				for _, m := range c.Chat() {
					texts[dedupKey(m.Content)] = true
				}
			}
			all, group := sourceExamplesGrouped(srcs, func(s, i int) bool { return s != h && !up[srcs[s].Upstream[i]] })
			for i, e := range background {
				all = append(all, e)
				group = append(group, len(srcs)+backgroundGroup[i])
			}
			var ex []injection.Example
			var g []int
			for i, e := range all {
				if !texts[dedupKey(e.Text)] {
					ex = append(ex, e)
					g = append(g, group[i])
				}
			}
			WeightSources(ex, g)
			d := &injection.Detector{Model: injection.Train(ex, cfg, nil)}
			r := LOSOResult{Source: held.Name, Scores: eval.CaseScores(d, held.Cases), Train: len(ex)}
			for _, c := range held.Cases {
				r.Malicious = append(r.Malicious, c.Malicious())
			}
			res[h] = r
		}()
	}
	wg.Wait()
	return res
}

func dedupKey(s string) string { return strings.Join(strings.Fields(strings.ToLower(s)), " ") }

// Rates are one source's TPR and FPR at a threshold; a rate is -1 when
// the source has no cases of that class.
type Rates struct {
	Attacks, Benign int
	TP, FP          int
	TPR, FPR        float64
}

// At returns the result's rates at threshold t.
func (r LOSOResult) At(t float64) Rates {
	var q Rates
	for i, s := range r.Scores {
		if r.Malicious[i] {
			q.Attacks++
			if s >= t {
				q.TP++
			}
		} else {
			q.Benign++
			if s >= t {
				q.FP++
			}
		}
	}
	q.TPR, q.FPR = -1, -1
	if q.Attacks > 0 {
		q.TPR = float64(q.TP) / float64(q.Attacks)
	}
	if q.Benign > 0 {
		q.FPR = float64(q.FP) / float64(q.Benign)
	}
	return q
}

// Macro returns the mean TPR over sources with attacks, the mean FPR over
// sources with benign cases, the lowest TPR and the highest FPR, at t.
func Macro(rs []LOSOResult, t float64) (tpr, fpr, minTPR, maxFPR float64) {
	nt, nf := 0, 0
	minTPR = 1
	for _, r := range rs {
		q := r.At(t)
		if q.TPR >= 0 {
			tpr += q.TPR
			nt++
			minTPR = min(minTPR, q.TPR)
		}
		if q.FPR >= 0 {
			fpr += q.FPR
			nf++
			maxFPR = max(maxFPR, q.FPR)
		}
	}
	return tpr / float64(max(1, nt)), fpr / float64(max(1, nf)), minTPR, maxFPR
}

// LOSOPresets reads the sensitivity thresholds off the leave-one-source-
// out scores: the lowest threshold on a 0.01 grid in [0.30, 0.99] at
// which the macro FPR over benign sources and the worst source's FPR are
// within the preset's bounds: low macro <= 1% and every source <= 3%;
// medium <= 3% and <= 5% (the bar); high <= 6% and <= 10%.
func LOSOPresets(rs []LOSOResult) (low, medium, high float64) {
	pick := func(macro, worst float64) float64 {
		for k := 30; k <= 99; k++ {
			t := float64(k) / 100
			if _, f, _, w := Macro(rs, t); f <= macro+1e-9 && w <= worst+1e-9 {
				return t
			}
		}
		return 0.99
	}
	return pick(0.01, 0.03), pick(0.03, 0.05), pick(0.06, 0.10)
}

// PrintLOSO writes the per-source table at the three presets and the
// macro averages.
func PrintLOSO(w io.Writer, rs []LOSOResult) {
	levels := []struct {
		name string
		t    float64
	}{{"low", injection.LowThreshold}, {"medium", injection.MediumThreshold}, {"high", injection.HighThreshold}}
	fmt.Fprintf(w, "Leave-one-source-out: each source scored by a model trained without it (and without every row of its upstream sets); thresholds low %.2f, medium %.2f, high %.2f\n", levels[0].t, levels[1].t, levels[2].t)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "source\tattacks\tbenign\tTPR low\tTPR medium\tTPR high\tFPR low\tFPR medium\tFPR high\t")
	f := func(v float64) string {
		if v < 0 {
			return "-"
		}
		return fmt.Sprintf("%.3f", v)
	}
	for _, r := range rs {
		q := [3]Rates{r.At(levels[0].t), r.At(levels[1].t), r.At(levels[2].t)}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Source, q[0].Attacks, q[0].Benign,
			f(q[0].TPR), f(q[1].TPR), f(q[2].TPR), f(q[0].FPR), f(q[1].FPR), f(q[2].FPR))
	}
	var m [3][4]float64
	for i, l := range levels {
		m[i][0], m[i][1], m[i][2], m[i][3] = Macro(rs, l.t)
	}
	fmt.Fprintf(tw, "macro average\t\t\t%s\t%s\t%s\t%s\t%s\t%s\t\n", f(m[0][0]), f(m[1][0]), f(m[2][0]), f(m[0][1]), f(m[1][1]), f(m[2][1]))
	fmt.Fprintf(tw, "worst source\t\t\t%s\t%s\t%s\t%s\t%s\t%s\t\n", f(m[0][2]), f(m[1][2]), f(m[2][2]), f(m[0][3]), f(m[1][3]), f(m[2][3]))
	tw.Flush()
	lo, med, hi := LOSOPresets(rs)
	fmt.Fprintf(w, "presets these scores imply: low %.2f, medium %.2f, high %.2f\n", lo, med, hi)
	for _, p := range []struct {
		name string
		t    float64
	}{{"low", lo}, {"medium", med}, {"high", hi}} {
		tpr, fpr, minTPR, maxFPR := Macro(rs, p.t)
		fmt.Fprintf(w, "  at the implied %s preset %.2f: macro TPR %.3f (worst %.3f), macro FPR %.3f (worst %.3f)\n", p.name, p.t, tpr, minTPR, fpr, maxFPR)
	}
}

// WeightSources sets example weights so that a source's total weight
// within a class grows with the square root of its size (group[i] names
// example i's source): the largest sets (1,881 no_robots requests, 1,000
// gandalf password requests) no longer drown the dozen-row families, and
// a small family does not weigh as much as a large one either. The mean
// weight within each class is 1.
func WeightSources(ex []injection.Example, group []int) {
	type key struct {
		g   int
		mal bool
	}
	n := map[key]int{}
	for i, e := range ex {
		n[key{group[i], e.Malicious}]++
	}
	sum := map[bool]float64{}
	cnt := map[bool]int{}
	for i := range ex {
		k := key{group[i], ex[i].Malicious}
		ex[i].Weight = 1 / math.Sqrt(float64(n[k]))
		sum[k.mal] += ex[i].Weight
		cnt[k.mal]++
	}
	for i := range ex {
		ex[i].Weight *= float64(cnt[ex[i].Malicious]) / sum[ex[i].Malicious]
	}
}

// TrainingSet returns the shipped model's training examples: every
// source of the injection files and the background files, weighted by
// source (WeightSources); group[i] indexes groupNames (sources, then
// background files) for example i, and trainedOn lists the files' base
// names, as the model records them.
func TrainingSet(data string, files []string) (ex []injection.Example, group []int, groupNames, trainedOn []string, err error) {
	srcs, err := LoadSources(data, files)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	bg, bgFile, bgNames, err := LoadTraining(data, BackgroundFiles)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	ex, group = sourceExamplesGrouped(srcs, func(int, int) bool { return true })
	for i, e := range bg {
		ex = append(ex, e)
		group = append(group, len(srcs)+bgFile[i])
	}
	WeightSources(ex, group)
	for _, s := range srcs {
		groupNames = append(groupNames, s.Name)
	}
	groupNames = append(groupNames, bgNames...)
	for _, f := range files {
		trainedOn = append(trainedOn, filepath.Base(f))
	}
	return ex, group, groupNames, append(trainedOn, bgNames...), nil
}

// sourceExamplesGrouped is sourceExamples with each example's source
// index.
func sourceExamplesGrouped(srcs []Source, keep func(s, i int) bool) (ex []injection.Example, group []int) {
	for s, src := range srcs {
		for i, c := range src.Cases {
			if !keep(s, i) {
				continue
			}
			for _, t := range c.TrainingTexts() {
				ex = append(ex, injection.Example{Text: t, Malicious: c.Malicious()})
				group = append(group, s)
			}
		}
	}
	return ex, group
}
