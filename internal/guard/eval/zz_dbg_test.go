package eval

import (
	"fmt"
	"os"
	"testing"

	"github.com/declaw/declaw/internal/guard/injection"
)

func TestDbgInj(t *testing.T) {
	d, _ := injection.New()
	for _, f := range []string{os.Getenv("F")} {
		b, _ := os.ReadFile("/work/shared/data/injection/" + f)
		cs, _ := ParseCases(b)
		for _, c := range cs {
			r := d.Score(c.Content, injection.Options{})
			if (r.Score >= 0.55) != c.Malicious() {
				fmt.Printf("%.2f m=%.2f r=%.2f %q %v\n", r.Score, r.ModelScore, r.RuleScore, clipS(c.Content), r.Reasons)
			}
		}
	}
}
func clipS(s string) string {
	if len(s) > 150 {
		return s[:150]
	}
	return s
}
