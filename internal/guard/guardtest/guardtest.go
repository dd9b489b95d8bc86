// Package guardtest builds deterministic inputs for the guard packages'
// tests and benchmarks, and locates the repository's data folder. It does
// not import testing.
package guardtest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

var words = strings.Fields(`the a to of and in is it you that for on with as this be are have
not can will your from or by at an we do if about my which their more all would there what
so up out when one time make like just know take people into year good some could them see
other than then now look only come its over think also back after use two how our work first
well way even new want because any these give day most us model request function response
error value string number return config server deploy cluster build test review summary
please explain code example data user file table query report meeting schedule budget`)

var snippets = []string{
	"Here is the stack trace: panic: runtime error: index out of range [3] with length 3 at main.go:42",
	"The build took 12.5 seconds on version 1.21.3 and used 2048 MB of memory.",
	"Meeting moved to 2024-03-15 at 14:30; room 4B, floor 12.",
	"```go\nfor i := 0; i < 100; i++ {\n\tsum += values[i] * 3\n}\n```",
	"The invoice total was $1,234.56 for 17 items shipped on 03/04/2024.",
	"Request id 7f3c2a10-9b1e-4c55-8e2d-0a6b9c1d2e3f returned HTTP 503 after 30000 ms.",
	"Contact me at {email} or call {phone} tomorrow.",
	"My card is {card} and my SSN is {ssn}.",
	"The server at {ip} keeps timing out; fallback is 2001:db8::7334.",
	"Set OPENAI_API_KEY={key} in your shell.",
}

// fill replaces the placeholders of a snippet with fresh random values, so
// no PII value repeats within a body (caches cannot flatter a benchmark).
func fill(rng *rand.Rand, s string) string {
	digits := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('0' + rng.IntN(10))
		}
		return string(b)
	}
	for strings.Contains(s, "{") {
		switch {
		case strings.Contains(s, "{email}"):
			s = strings.Replace(s, "{email}", words[rng.IntN(len(words))]+"."+words[rng.IntN(len(words))]+digits(2)+"@example.com", 1)
		case strings.Contains(s, "{phone}"):
			s = strings.Replace(s, "{phone}", fmt.Sprintf("+1 %d%s %d%s %s", 2+rng.IntN(8), digits(2), 2+rng.IntN(8), digits(2), digits(4)), 1)
		case strings.Contains(s, "{card}"):
			s = strings.Replace(s, "{card}", LuhnComplete("4"+digits(14)), 1)
		case strings.Contains(s, "{ssn}"):
			s = strings.Replace(s, "{ssn}", fmt.Sprintf("%03d-%02d-%04d", 1+rng.IntN(665), 1+rng.IntN(98), 1+rng.IntN(9998)), 1)
		case strings.Contains(s, "{ip}"):
			s = strings.Replace(s, "{ip}", fmt.Sprintf("%d.%d.%d.%d", 11+rng.IntN(200), rng.IntN(256), rng.IntN(256), 1+rng.IntN(254)), 1)
		case strings.Contains(s, "{key}"):
			const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
			k := make([]byte, 48)
			for i := range k {
				k[i] = alnum[rng.IntN(len(alnum))]
			}
			s = strings.Replace(s, "{key}", "sk-proj-"+string(k), 1)
		default:
			return s
		}
	}
	return s
}

// LuhnComplete appends the Luhn check digit to a digit string.
func LuhnComplete(d string) string {
	sum := 0
	dbl := true
	for i := len(d) - 1; i >= 0; i-- {
		v := int(d[i] - '0')
		if dbl {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
		dbl = !dbl
	}
	return d + string(byte('0'+(10-sum%10)%10))
}

// ChatRequest returns a JSON chat-completion request body of about size
// bytes: conversational text with code, numbers, dates, identifiers and a
// little PII, the shape an agent sends to a model API.
func ChatRequest(size int) []byte {
	rng := rand.New(rand.NewPCG(42, 1))
	type msg struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	var msgs []msg
	total := 0
	roles := []string{"user", "assistant"}
	msgs = append(msgs, msg{"system", "You are a helpful assistant for the engineering team."})
	for i := 0; total < size-200; i++ {
		var b strings.Builder
		for b.Len() < 600+rng.IntN(1400) {
			if rng.IntN(12) == 0 {
				b.WriteString(fill(rng, snippets[rng.IntN(len(snippets))]))
			} else {
				n := 8 + rng.IntN(16)
				for k := 0; k < n; k++ {
					if k > 0 {
						b.WriteByte(' ')
					}
					w := words[rng.IntN(len(words))]
					if k == 0 {
						w = strings.ToUpper(w[:1]) + w[1:]
					}
					b.WriteString(w)
				}
				b.WriteString(". ")
			}
			if rng.IntN(8) == 0 {
				b.WriteString("\n\n")
			}
		}
		m := msg{roles[i%2], b.String()}
		msgs = append(msgs, m)
		total += len(m.Content) + 40
	}
	body, _ := json.Marshal(map[string]any{"model": "gpt-4o", "temperature": 0.2, "stream": true, "messages": msgs})
	return body
}

// Module is the module path whose root holds the data folder.
const Module = "github.com/declaw/declaw"

// DataDir returns the repository's data folder (`data/` at the module
// root, found by walking up from the working directory to the go.mod of
// Module). The labelled sets live in the repository, so a fresh clone
// alone has them; nothing outside the module root is looked at.
func DataDir() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	d := filepath.Join(root, "data")
	if !isDir(filepath.Join(d, "injection")) || !isDir(filepath.Join(d, "pii")) {
		return "", fmt.Errorf("%s: no injection/ and pii/ data folders", d)
	}
	return d, nil
}

// ModuleRoot returns the directory of the go.mod declaring Module, the
// working directory or its nearest ancestor holding it.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && modulePath(b) == Module {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("module %s: no go.mod found above the working directory", Module)
		}
		dir = parent
	}
}

// modulePath returns the path of a go.mod's module line.
func modulePath(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// CPUThroughput is a helper for benchmarks on shared machines, where
// wall-clock MB/s mostly measures the neighbours: start it before the
// timed loop and call the returned function after it with the bytes
// processed per iteration and the iteration count. It returns MB per
// CPU-second (a per-core figure), or 0 where CPU time is unavailable.
func CPUThroughput() func(bytesPerOp int64, n int) float64 {
	start := CPUTime()
	return func(bytesPerOp int64, n int) float64 {
		d := CPUTime() - start
		if d <= 0 {
			return 0
		}
		return float64(bytesPerOp) * float64(n) / d.Seconds() / 1e6
	}
}
