// Package guardcmd implements the `declaw guard` subcommands: scan (PII,
// secrets and prompt injection on stdin), eval (precision/recall and
// TPR/FPR on labelled files) and train (fit the injection model). It is a
// thin adapter: flags and I/O here, detection in the pure packages.
package guardcmd

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/declaw/declaw/internal/guard/injection"
	"github.com/declaw/declaw/internal/guard/pii"
	"github.com/declaw/declaw/internal/guard/redact"
)

const usage = `usage: declaw guard <command> [flags]

commands:
  scan   [--pii TYPES] [--injection] [--sensitivity low|medium|high] [--threshold F] [--json-body]
         read text (or a JSON body) on stdin, print findings and the redacted text as JSON
  eval   [--json] [--mismatches] FILE...
         score detectors on presidio span JSON and YAML {id,label,content} files
  train  [-data DIR] [-train FILES] [-out PATH] [-folds N]
         fit the injection model from labelled YAML files
`

// Run executes a guard subcommand and returns the process exit code.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "scan":
		err = runScan(args[1:], stdin, stdout, stderr)
	case "eval":
		err = runEval(args[1:], stdout, stderr)
	case "train":
		err = runTrain(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "declaw guard: unknown command %q\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.Is(err, errUsage) {
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "declaw guard %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

var errUsage = errors.New("usage")

// ParseTypes parses a comma-separated list of PII types; "all" selects
// every type, "default" or "" the defaults, "none" nothing.
func ParseTypes(s string) ([]pii.Type, error) {
	switch s {
	case "", "default":
		return append([]pii.Type(nil), pii.DefaultTypes...), nil
	case "all":
		return append([]pii.Type(nil), pii.AllTypes...), nil
	case "none":
		return []pii.Type{}, nil
	}
	var out []pii.Type
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		t, ok := pii.ParseType(f)
		if !ok {
			return nil, fmt.Errorf("unknown PII type %q", f)
		}
		out = append(out, t)
	}
	return out, nil
}

// ScanOutput is what scan prints.
type ScanOutput struct {
	PII       []Finding         `json:"pii"`
	Secrets   []Finding         `json:"secrets"`
	Injection *injection.Result `json:"injection,omitempty"`
	Redacted  json.RawMessage   `json:"redacted"`
	Tokens    int               `json:"tokens"`
}

// Finding is a span; in --json-body mode String is the index of the JSON
// string value (in document order) the offsets refer to.
type Finding struct {
	pii.Span
	String *int `json:"string,omitempty"`
}

func runScan(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("scan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	piiFlag := fs.String("pii", "default", "comma-separated PII types (email,phone,ssn,credit_card,api_key,ip_address,iban,person_name,address), 'all' or 'none'")
	inj := fs.Bool("injection", false, "score prompt injection")
	sens := fs.String("sensitivity", "medium", "injection sensitivity: low, medium or high")
	thr := fs.Float64("threshold", 0, "injection threshold in (0,1], overriding --sensitivity")
	jsonBody := fs.Bool("json-body", false, "stdin is a JSON body: scan and redact string values only")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "scan: unexpected arguments %q\n", fs.Args())
		return errUsage
	}
	types, err := ParseTypes(*piiFlag)
	if err != nil {
		return err
	}
	if !containsType(types, pii.APIKey) {
		types = append(types, pii.APIKey) // secrets are always scanned
	}
	s, err := injection.ParseSensitivity(*sens)
	if err != nil {
		return err
	}
	if *thr < 0 || *thr > 1 {
		return fmt.Errorf("--threshold %v out of range (0,1]", *thr)
	}
	in, err := io.ReadAll(stdin)
	if err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	out := ScanOutput{PII: []Finding{}, Secrets: []Finding{}}
	sc := &pii.Scanner{}
	red := redact.New()
	var texts []string
	if *jsonBody {
		idx := -1
		body, err := red.JSON(in, func(v string) []redact.Span {
			idx++
			texts = append(texts, v)
			return collect(&out, sc.Scan(v, types), &idx)
		})
		if err != nil {
			return err
		}
		out.Redacted = json.RawMessage(body)
	} else {
		text := string(in)
		texts = []string{text}
		rs := collect(&out, sc.Scan(text, types), nil)
		b, _ := json.Marshal(red.Text(text, rs))
		out.Redacted = b
	}
	out.Tokens = red.Len()
	if *inj {
		det, err := injection.New()
		if err != nil {
			return err
		}
		r := det.Score(strings.Join(texts, "\n"), injection.Options{Sensitivity: s, Threshold: *thr})
		out.Injection = &r
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func containsType(ts []pii.Type, t pii.Type) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}

func collect(out *ScanOutput, spans []pii.Span, idx *int) []redact.Span {
	rs := make([]redact.Span, 0, len(spans))
	for _, sp := range spans {
		f := Finding{Span: sp}
		if idx != nil {
			i := *idx
			f.String = &i
		}
		if sp.Type == pii.APIKey {
			out.Secrets = append(out.Secrets, f)
		} else {
			out.PII = append(out.PII, f)
		}
		rs = append(rs, redact.Span{Type: string(sp.Type), Start: sp.Start, End: sp.End})
	}
	return rs
}
