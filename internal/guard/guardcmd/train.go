package guardcmd

import (
	"cmp"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/declaw/declaw/internal/guard/eval"
	"github.com/declaw/declaw/internal/guard/injection"
	"github.com/declaw/declaw/internal/guard/injection/corpus"
)

// DefaultInjectionFiles are the injection files the shipped model is
// trained on (relative to the data directory): every labelled text file
// of data/injection. l3_outbound_* are tool-call policy cases, not text.
// How well the model does on a source it has not seen is measured by
// leave-one-source-out (`eval --loso`), not by a held-out file.
var DefaultInjectionFiles = []string{
	"injection/more/l1_attacks.yaml",
	"injection/more/l1_benign.yaml",
	"injection/more/l1_mixed.yaml",
	"injection/more/l3_inbound_attacks.yaml",
	"injection/more/l3_inbound_benign.yaml",
	"injection/more/l3_inbound_trust_attacks.yaml",
	"injection/more/l3_inbound_trust_benign.yaml",
	"injection/more/l3_inbound_trust_wrapped_attacks.yaml",
	"injection/more/l3_inbound_trust_wrapped_benign.yaml",
	"injection/more/multiturn_attacks.yaml",
	"injection/more/multiturn_benign.yaml",
	"injection/opensource_deepset_attacks.yaml",
	"injection/opensource_deepset_benign.yaml",
	"injection/opensource_gandalf_attacks.yaml",
	"injection/opensource_giskard_attacks.yaml",
	"injection/opensource_jbb_attacks.yaml",
	"injection/opensource_jbb_benign.yaml",
}

// DefaultTrainFiles are all the files the shipped model is trained on,
// as it records them: the injection files, then BackgroundFiles.
var DefaultTrainFiles = append(slices.Clone(DefaultInjectionFiles), BackgroundFiles...)

func runTrain(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "data", "the data directory (the repository's data/; relative paths are from the working directory, the repository root)")
	files := fs.String("train", "", "comma-separated training files, relative to -data: YAML case lists, or presidio JSON whose texts are used as benign examples (default: the shipped model's set, every source weighted by its size, see TrainingSet)")
	outPath := fs.String("out", "internal/guard/injection/model.bin", "where to write the model")
	folds := fs.Int("folds", 5, "cross-validation folds for the out-of-fold report (0 to skip)")
	byFile := fs.Bool("group-cv", false, "cross-validate by file instead: each training file is scored by a model trained on the others")
	epochs := fs.Int("epochs", 0, "SGD epochs (0: default)")
	seed := fs.Uint64("seed", 1, "shuffle seed")
	l2 := fs.Float64("l2", 0, "L2 regularisation (0: default)")
	lr := fs.Float64("lr", 0, "learning rate (0: default)")
	normExp := fs.Float64("norm", 0, "length-normalisation exponent: 0.5 = 1/sqrt(n), 0.75 (default), 1 = mean over n-grams")
	worst := fs.Int("worst", 0, "with cross-validation: print each training file's N worst out-of-fold examples (highest-scoring benign, lowest-scoring attacks)")
	balance := fs.Bool("balance-files", false, "weight examples so that every file has the same total weight within its class (attacks, benign)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var ex []injection.Example
	var fileOf []int
	var names, trainedOn []string
	var err error
	if *files == "" {
		ex, fileOf, names, trainedOn, err = TrainingSet(*data, DefaultInjectionFiles)
	} else {
		ex, fileOf, names, err = LoadTraining(*data, strings.Split(*files, ","))
		trainedOn = names
	}
	if err != nil {
		return err
	}
	if *balance {
		BalanceFiles(ex, fileOf)
	}
	cfg := injection.TrainConfig{Epochs: *epochs, Seed: *seed, L2: *l2, LearningRate: *lr, Norm: *normExp}
	pos := 0
	for _, e := range ex {
		if e.Malicious {
			pos++
		}
	}
	fmt.Fprintf(stdout, "training on %d examples (%d malicious, %d benign) from %s\n", len(ex), pos, len(ex)-pos, strings.Join(trainedOn, ", "))
	switch {
	case *byFile:
		group, k := CVGroups(fileOf, names)
		crossValidate(stdout, ex, cfg, group, k, "leave-one-file-out", fileOf, names, true, *worst)
	case *folds > 1:
		idx := make([]int, len(ex))
		for i := range idx {
			idx[i] = i
		}
		rand.New(rand.NewPCG(*seed, 7)).Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		fold := make([]int, len(ex))
		for r, i := range idx {
			fold[i] = r % *folds
		}
		crossValidate(stdout, ex, cfg, fold, *folds, fmt.Sprintf("%d-fold", *folds), fileOf, names, false, *worst)
	}
	m := injection.Train(ex, cfg, trainedOn)
	if err := os.WriteFile(*outPath, m.Encode(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (%d bytes)\n", *outPath, len(m.Encode()))
	return nil
}

// LoadTraining reads the training files (paths relative to data, or
// "corpus/NAME" for a file embedded in package corpus): YAML case lists
// give labelled examples, presidio JSON files give benign texts. fileOf[i] indexes names (base names) for example i.
func LoadTraining(data string, files []string) (ex []injection.Example, fileOf []int, names []string, err error) {
	for _, f := range files {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		var b []byte
		if name, ok := strings.CutPrefix(f, corpus.Prefix); ok {
			// Written for this repository and embedded (package corpus).
			b, err = corpus.ReadFile(name)
		} else {
			b, err = os.ReadFile(filepath.Join(data, f))
		}
		if err != nil {
			return nil, nil, nil, err
		}
		names = append(names, filepath.Base(f))
		if strings.HasSuffix(f, ".json") {
			// A presidio span file: its texts join the benign pool.
			recs, err := eval.ParsePresidio(b)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("%s: %w", f, err)
			}
			for _, r := range recs {
				ex = append(ex, injection.Example{Text: r.FullText})
				fileOf = append(fileOf, len(names)-1)
			}
			continue
		}
		cs, err := eval.ParseCases(b)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", f, err)
		}
		for _, c := range cs {
			if c.OutOfScope() != "" {
				continue
			}
			for _, t := range c.TrainingTexts() {
				ex = append(ex, injection.Example{Text: t, Malicious: c.Malicious()})
				fileOf = append(fileOf, len(names)-1)
			}
		}
	}
	return ex, fileOf, names, nil
}

// CorpusFolds is the number of folds a file of package corpus is split
// into in leave-one-file-out cross-validation.
const CorpusFolds = 5

// CVGroups assigns the examples to the groups of leave-one-file-out
// cross-validation: every data file is one group. A file written
// for this repository (package corpus) is split into CorpusFolds groups by
// row (row i goes to group i mod CorpusFolds, which spreads its kinds of
// request evenly): it is one author's ordinary requests, and holding all
// of it out would score it with a model that has never seen a benign
// imperative request, unlike the shipped model, which was trained on it.
// The per-file FPR criterion of the presets still treats it as one file.
func CVGroups(fileOf []int, names []string) (group []int, k int) {
	base := make([]int, len(names)) // first group of each file
	for f, name := range names {
		base[f] = k
		if corpus.Has(name) {
			k += CorpusFolds
		} else {
			k++
		}
	}
	group = make([]int, len(fileOf))
	row := make([]int, len(names))
	for i, f := range fileOf {
		group[i] = base[f]
		if corpus.Has(names[f]) {
			group[i] += row[f] % CorpusFolds
		}
		row[f]++
	}
	return group, k
}

// BalanceFiles sets example weights so that, within each class, every
// file carries the same total weight (the mean weight stays 1): without it
// the largest file (gandalf's 1,000 password requests) dominates what the
// model learns an attack looks like.
func BalanceFiles(ex []injection.Example, fileOf []int) {
	type key struct {
		file int
		mal  bool
	}
	count := map[key]int{}
	files := map[bool]int{}
	total := map[bool]int{}
	for i, e := range ex {
		k := key{fileOf[i], e.Malicious}
		if count[k] == 0 {
			files[e.Malicious]++
		}
		count[k]++
		total[e.Malicious]++
	}
	for i := range ex {
		k := key{fileOf[i], ex[i].Malicious}
		ex[i].Weight = float64(total[k.mal]) / float64(files[k.mal]*count[k])
	}
}

// crossValidate prints out-of-fold TPR/FPR of the full detector (rules and
// model) over a grid of thresholds, and the out-of-fold log-loss; the
// presets and hyperparameters are picked from it. fold[i] in [0,k) assigns
// example i to a fold.
func crossValidate(w io.Writer, ex []injection.Example, cfg injection.TrainConfig, fold []int, k int, what string, fileOf []int, names []string, byFile bool, worst int) {
	scores := OutOfFold(ex, cfg, fold, k)
	if worst > 0 {
		printWorst(w, ex, scores, fileOf, names, worst)
	}
	// Mean log-loss of the out-of-fold scores (lower is better).
	ll := 0.0
	for i, e := range ex {
		p := min(max(scores[i], 1e-6), 1-1e-6)
		if e.Malicious {
			ll -= math.Log(p)
		} else {
			ll -= math.Log(1 - p)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "%s out-of-fold scores on the training files (log-loss %.4f):\n", what, ll/float64(len(ex)))
	fmt.Fprintln(tw, "threshold\tTPR\tFPR\t")
	for t := 0.30; t < 0.991; t += 0.05 {
		tp, fp, p, n := 0, 0, 0, 0
		for i, e := range ex {
			if e.Malicious {
				p++
				if scores[i] >= t {
					tp++
				}
			} else {
				n++
				if scores[i] >= t {
					fp++
				}
			}
		}
		fmt.Fprintf(tw, "%.2f\t%.3f\t%.3f\t\n", t, float64(tp)/float64(max(1, p)), float64(fp)/float64(max(1, n)))
	}
	tw.Flush()
	// Operating points: the lowest threshold (on a 0.01 grid) at which
	// every benign file's out-of-fold FPR is at most the target (the
	// issue's criterion is per file); the presets come from here.
	fmt.Fprintln(w, "operating points (lowest threshold with every benign file's out-of-fold FPR <= target):")
	for _, target := range []float64{0.01, 0.03, 0.10} {
		t := OperatingPoint(ex, scores, fileOf, target)
		fmt.Fprintf(w, "  FPR <= %.2f: threshold %.2f;", target, t)
		for f, name := range names {
			tp, fp, p, n := 0, 0, 0, 0
			for i, e := range ex {
				if fileOf[i] != f {
					continue
				}
				if e.Malicious {
					p++
					if scores[i] >= t {
						tp++
					}
				} else {
					n++
					if scores[i] >= t {
						fp++
					}
				}
			}
			short := strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(name, "opensource_"), ".yaml"), ".json")
			if p > 0 {
				fmt.Fprintf(w, " %s TPR %.3f", short, float64(tp)/float64(p))
			}
			if n > 0 {
				fmt.Fprintf(w, " %s FPR %.3f", short, float64(fp)/float64(n))
			}
		}
		fmt.Fprintln(w)
	}
	if byFile {
		lo, med, hi := Presets(ex, scores, fileOf)
		fmt.Fprintf(w, "presets from these scores: low %.2f, medium %.2f, high %.2f\n", lo, med, hi)
	}
}

// printWorst lists, per training file, the n benign examples with the
// highest out-of-fold scores and the n attacks with the lowest.
func printWorst(w io.Writer, ex []injection.Example, scores []float64, fileOf []int, names []string, n int) {
	for f, name := range names {
		for _, mal := range []bool{false, true} {
			var idx []int
			for i, e := range ex {
				if fileOf[i] == f && e.Malicious == mal {
					idx = append(idx, i)
				}
			}
			if len(idx) == 0 {
				continue
			}
			slices.SortStableFunc(idx, func(a, b int) int {
				if mal {
					return cmp.Compare(scores[a], scores[b])
				}
				return cmp.Compare(scores[b], scores[a])
			})
			what := "highest-scoring benign"
			if mal {
				what = "lowest-scoring attacks"
			}
			fmt.Fprintf(w, "%s: %s (out of fold)\n", name, what)
			for _, i := range idx[:min(n, len(idx))] {
				fmt.Fprintf(w, "  %.3f %q\n", scores[i], clipText(ex[i].Text, 120))
			}
		}
	}
}

func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// OutOfFold scores every example with the full detector (rules and a
// model trained on the other folds); fold[i] in [0,k) assigns example i.
func OutOfFold(ex []injection.Example, cfg injection.TrainConfig, fold []int, k int) []float64 {
	scores := make([]float64, len(ex))
	for f := 0; f < k; f++ {
		var tr []injection.Example
		for i, e := range ex {
			if fold[i] != f {
				tr = append(tr, e)
			}
		}
		d := &injection.Detector{Model: injection.Train(tr, cfg, nil)}
		for i, e := range ex {
			if fold[i] == f {
				scores[i] = d.Score(e.Text, injection.Options{}).Score
			}
		}
	}
	return scores
}

// Presets are the sensitivity thresholds read off leave-one-file-out
// scores: low, medium and high are the lowest thresholds at which every
// benign training file's out-of-fold FPR is at most 1%, 3% (the issue's
// bar for medium) and 10%.
func Presets(ex []injection.Example, scores []float64, fileOf []int) (low, medium, high float64) {
	return OperatingPoint(ex, scores, fileOf, 0.01), OperatingPoint(ex, scores, fileOf, 0.03), OperatingPoint(ex, scores, fileOf, 0.10)
}

// OperatingPoint returns the lowest threshold on a 0.01 grid in [0.30,
// 0.99] at which the FPR of every file's benign examples (fileOf[i] names
// example i's file) is at most target.
func OperatingPoint(ex []injection.Example, scores []float64, fileOf []int, target float64) float64 {
	for k := 30; k <= 99; k++ {
		t := float64(k) / 100
		fp, n := map[int]int{}, map[int]int{}
		for i, e := range ex {
			if e.Malicious {
				continue
			}
			n[fileOf[i]]++
			if scores[i] >= t {
				fp[fileOf[i]]++
			}
		}
		ok := true
		for f, c := range n {
			if float64(fp[f]) > target*float64(c) {
				ok = false
			}
		}
		if ok {
			return t
		}
	}
	return 0.99
}
