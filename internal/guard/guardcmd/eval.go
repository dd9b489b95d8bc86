package guardcmd

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"

	"github.com/declaw/declaw/internal/guard/eval"
	"github.com/declaw/declaw/internal/guard/injection"
	"github.com/declaw/declaw/internal/guard/pii"
)

// EvalOutput is what eval --json prints.
type EvalOutput struct {
	Model     ModelInfo             `json:"model"`
	PII       []PIIFileResult       `json:"pii,omitempty"`
	Injection []eval.InjectionScore `json:"injection,omitempty"`
	// Pooled sums the injection rows per split and sensitivity.
	Pooled   []eval.InjectionScore      `json:"injection_pooled,omitempty"`
	Mismatch map[string][]eval.Mismatch `json:"mismatches,omitempty"`
}

// ModelInfo describes the injection model used.
type ModelInfo struct {
	Description string             `json:"description"`
	TrainedOn   []string           `json:"trained_on"`
	Thresholds  map[string]float64 `json:"thresholds"`
}

// PIIFileResult holds the per-type scores for one presidio file.
type PIIFileResult struct {
	File  string           `json:"file"`
	Texts int              `json:"texts"`
	Types []eval.TypeScore `json:"types"`
}

func runEval(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	mism := fs.Bool("mismatches", false, "also list PII false positives and negatives")
	typesFlag := fs.String("pii", "all", "PII types to score")
	rulesOnly := fs.Bool("rules-only", false, "score injection with the rules alone (no model), for ablation")
	loso := fs.Bool("loso", false, "leave-one-source-out: score every injection source of -data with a model trained on the rest (trains one model per source) and print the per-source table")
	data := fs.String("data", "data", "with --loso: the data directory")
	workers := fs.Int("workers", runtime.GOMAXPROCS(0), "with --loso: models trained at once")
	var cfg injection.TrainConfig
	fs.IntVar(&cfg.Epochs, "epochs", 0, "with --loso: SGD epochs (0: the trainer's default)")
	fs.Float64Var(&cfg.LearningRate, "lr", 0, "with --loso: learning rate (0: default)")
	fs.Float64Var(&cfg.L2, "l2", 0, "with --loso: L2 regularisation (0: default)")
	fs.Float64Var(&cfg.Norm, "norm", 0, "with --loso: length-normalisation exponent (0: default)")
	piiGen := fs.Int("pii-generated", 0, "score PII on N texts per type from the built-in generator (valid values in misleading contexts) and N near misses per validated type")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *loso {
		return runLOSO(stdout, *data, *workers, *asJSON, cfg)
	}
	if *piiGen > 0 {
		return runPIIGenerated(stdout, *piiGen, *asJSON)
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "eval: no files given")
		return errUsage
	}
	types, err := ParseTypes(*typesFlag)
	if err != nil {
		return err
	}
	det, err := injection.New()
	if err != nil {
		return err
	}
	if *rulesOnly {
		det = &injection.Detector{Model: &injection.Model{TrainedOn: []string{}}}
	}
	out := EvalOutput{Model: ModelInfo{
		Description: det.Model.String(),
		TrainedOn:   det.Model.TrainedOn,
		Thresholds: map[string]float64{
			"low": injection.Low.Threshold(), "medium": injection.Medium.Threshold(), "high": injection.High.Threshold(),
		},
	}}
	if *mism {
		out.Mismatch = map[string][]eval.Mismatch{}
	}
	sc := &pii.Scanner{}
	for _, f := range fs.Args() {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		switch strings.ToLower(filepath.Ext(f)) {
		case ".json":
			recs, err := eval.ParsePresidio(data)
			if err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			ts, mm := eval.ScorePII(sc, recs, types)
			out.PII = append(out.PII, PIIFileResult{File: filepath.Base(f), Texts: len(recs), Types: ts})
			if *mism {
				out.Mismatch[filepath.Base(f)] = mm
			}
		case ".yaml", ".yml":
			cases, err := eval.ParseCases(data)
			if err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			out.Injection = append(out.Injection, eval.ScoreInjection(det, f, cases)...)
		default:
			return fmt.Errorf("%s: unknown format (want .json presidio spans or .yaml cases)", f)
		}
	}
	if len(out.Injection) > 0 {
		out.Pooled = append(eval.Pool(out.Injection, false), eval.Pool(out.Injection, true)...)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	printEval(stdout, out)
	return nil
}

func printEval(w io.Writer, out EvalOutput) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, f := range out.PII {
		fmt.Fprintf(w, "PII: %s (%d texts; span-level, IoU >= %.1f)\n", f.File, f.Texts, eval.MatchIoU)
		fmt.Fprintln(tw, "type\tgold\ttp\tfp\tfn\tprecision\trecall\tf1\t")
		for _, t := range f.Types {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%.3f\t%.3f\t%.3f\t\n", t.Type, t.Gold, t.TP, t.FP, t.FN, t.Precision, t.Recall, t.F1)
		}
		tw.Flush()
		fmt.Fprintln(w)
		for _, m := range out.Mismatch[f.File] {
			fmt.Fprintf(w, "  %s %s %q %s\n", m.Kind, m.Type, m.Text, m.Gold)
		}
	}
	if len(out.Injection) > 0 {
		fmt.Fprintf(w, "Injection model: %s\n", out.Model.Description)
		fmt.Fprintf(w, "Thresholds: low %.2f, medium %.2f, high %.2f\n", out.Model.Thresholds["low"], out.Model.Thresholds["medium"], out.Model.Thresholds["high"])
		fmt.Fprintln(tw, "file\tsplit\tsensitivity\tthreshold\tmalicious\tbenign\tTPR\tFPR\t")
		for _, r := range out.Injection {
			split := "held-out"
			if r.Trained {
				split = "TRAIN"
			}
			if r.OutOfScope != "" {
				split = "out-of-scope*"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%d\t%d\t%s\t%s\t\n", r.File, split, r.Sensitivity, r.Threshold, r.Malicious, r.Benign, pct(r.TPR), pct(r.FPR))
		}
		for _, r := range out.Pooled {
			fmt.Fprintf(tw, "%s\t\t%s\t%.2f\t%d\t%d\t%s\t%s\t\n", r.File, r.Sensitivity, r.Threshold, r.Malicious, r.Benign, pct(r.TPR), pct(r.FPR))
		}
		tw.Flush()
		seen := map[string]bool{}
		for _, r := range out.Injection {
			if r.OutOfScope != "" && !seen[r.File] {
				seen[r.File] = true
				fmt.Fprintf(w, "* %s: not pooled: %s\n", r.File, r.OutOfScope)
			}
		}
	}
}

func pct(p *float64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%.3f", *p)
}

// LOSOOutput is what eval --loso --json prints.
type LOSOOutput struct {
	Thresholds map[string]float64 `json:"thresholds"`
	Sources    []LOSORow          `json:"sources"`
	// Macro holds, per preset, the mean TPR over sources with attacks and
	// the mean FPR over sources with benign cases.
	Macro map[string]Rates `json:"macro"`
}

// LOSORow is one held-out source at the medium preset.
type LOSORow struct {
	Source string `json:"source"`
	Rates
}

func runLOSO(stdout io.Writer, data string, workers int, asJSON bool, cfg injection.TrainConfig) error {
	files, err := InjectionFiles(data)
	if err != nil {
		return err
	}
	srcs, err := LoadSources(data, files)
	if err != nil {
		return err
	}
	bg, bgFile, _, err := LoadTraining(data, BackgroundFiles)
	if err != nil {
		return err
	}
	rs := LOSO(srcs, bg, bgFile, cfg, workers)
	if !asJSON {
		PrintLOSO(stdout, rs)
		return nil
	}
	out := LOSOOutput{Thresholds: map[string]float64{"low": injection.LowThreshold, "medium": injection.MediumThreshold, "high": injection.HighThreshold}, Macro: map[string]Rates{}}
	for _, r := range rs {
		out.Sources = append(out.Sources, LOSORow{Source: r.Source, Rates: r.At(injection.MediumThreshold)})
	}
	for name, t := range out.Thresholds {
		tpr, fpr, _, _ := Macro(rs, t)
		out.Macro[name] = Rates{TPR: tpr, FPR: fpr}
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func runPIIGenerated(stdout io.Writer, n int, asJSON bool) error {
	recs, near := eval.GeneratedPII(1, n)
	rs := eval.ScoreGenerated(&pii.Scanner{}, recs, near)
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rs)
	}
	fmt.Fprintf(stdout, "PII: generated (%d texts per type, valid values in misleading contexts; %d near misses per validated type)\n", n, n)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "type\tgold\ttp\tfp\tfn\tprecision\trecall\tnear misses\tflagged\tnear-miss FPR\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%.3f\t%.3f\t%d\t%d\t%.3f\t\n", r.Type, r.Gold, r.TP, r.FP, r.FN, r.Precision, r.Recall, r.NearMisses, r.Flagged, r.NearFPR)
	}
	return tw.Flush()
}
