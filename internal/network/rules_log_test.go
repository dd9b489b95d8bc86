package network

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/declaw/declaw/internal/network/flowlog"
)

// renderLogged is render with the log and limit expressions spelled out
// (render prints unknown expressions with %+v, which shows the log prefix
// as bytes).
func renderLogged(rs ruleset) string {
	lines := strings.Split(render(rs), "\n")
	var rules []*nftables.Rule
	for _, cd := range rs.chains {
		rules = append(rules, cd.rules...)
	}
	rules = append(rules, rs.rules...)
	// Re-render every rule line in order: render emits one line per rule,
	// each starting with two spaces.
	i := 0
	for n, l := range lines {
		if !strings.HasPrefix(l, "  [ ") {
			continue
		}
		var parts []string
		for _, e := range rules[i].Exprs {
			parts = append(parts, renderLogExpr(e))
		}
		suffix := ""
		if j := strings.LastIndex(l, " ] userdata="); j >= 0 {
			suffix = l[j+2:] // " userdata=..."
		}
		lines[n] = "  [ " + strings.Join(parts, " ] [ ") + " ]" + suffix
		i++
	}
	return strings.Join(lines, "\n")
}

func renderLogExpr(e expr.Any) string {
	switch e := e.(type) {
	case *expr.Log:
		return fmt.Sprintf("log group %d snaplen %d prefix %q key %#x", e.Group, e.Snaplen, e.Data, e.Key)
	case *expr.Limit:
		return fmt.Sprintf("limit rate %d/%ds burst %d type %d over %v", e.Rate, e.Unit, e.Burst, e.Type, e.Over)
	}
	return renderExpr(e)
}

func TestGoldenLogging(t *testing.T) {
	fw, s := testFirewall()
	fw.logGroup = 7
	goldenCompare(t, "log-base", renderLogged(fw.base()))
	goldenCompare(t, "log-slot", renderLogged(fw.slot(s)))
	for _, tt := range []struct {
		name string
		p    Policy
	}{
		{"allow-all-default", Policy{}},
		{"deny-all", Policy{DenyOut: []string{"0.0.0.0/0"}}},
		{"allow-beats-deny", Policy{DenyOut: []string{"*"}, AllowOut: []string{"198.51.100.0/24"}}},
		{"deny-cidrs", Policy{DenyOut: []string{"203.0.113.0/24"}, AllowOut: []string{"203.0.113.7"}}},
		{"domains-proxy", Policy{DenyOut: []string{"*"}, AllowOut: []string{"*.example.com", "198.51.100.1"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePolicy(tt.p)
			if err != nil {
				t.Fatal(err)
			}
			goldenCompare(t, "log-policy-"+tt.name, fmt.Sprintf("# %+v group=7\n%s", tt.p, renderLogged(fw.policy(s, p))))
		})
	}
}

// TestLoggingOff checks LogGroup 0 adds no log or limit anywhere, so the
// goldens without logging stand for the default configuration.
func TestLoggingOff(t *testing.T) {
	fw, s := testFirewall()
	p, err := ParsePolicy(Policy{DenyOut: []string{"*"}, AllowOut: []string{"198.51.100.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, rs := range map[string]ruleset{"base": fw.base(), "slot": fw.slot(s), "policy": fw.policy(s, p)} {
		if got := renderLogged(rs); strings.Contains(got, "log group") || strings.Contains(got, "limit rate") || strings.Contains(got, "guard") {
			t.Errorf("%s without a log group has log rules:\n%s", name, got)
		}
	}
}

// TestLogRulesPrecedeVerdicts checks the invariant the audit relies on:
// with logging, every drop in a slot's chains follows a log rule with the
// same match, and every accept of the policy chain follows a log of new
// connections with the same match.
func TestLogRulesPrecedeVerdicts(t *testing.T) {
	fw, s := testFirewall()
	fw.logGroup = 7
	policies := []Policy{{}, {DenyOut: []string{"*"}}, {DenyOut: []string{"10.0.0.0/8"}, AllowOut: []string{"10.1.0.0/16"}}}
	sets := []ruleset{fw.slot(s)}
	for _, p := range policies {
		parsed, err := ParsePolicy(p)
		if err != nil {
			t.Fatal(err)
		}
		sets = append(sets, fw.policy(s, parsed))
	}
	for _, rs := range sets {
		for _, cd := range rs.chains {
			for i, r := range cd.rules {
				v, ok := r.Exprs[len(r.Exprs)-1].(*expr.Verdict)
				if !ok || v.Kind != expr.VerdictDrop && v.Kind != expr.VerdictAccept {
					continue
				}
				if cd.chain.Name == slotInChain(s.Index) && v.Kind == expr.VerdictAccept {
					continue // DNS and proxy on the gateway: not a connection decision
				}
				if i == 0 {
					t.Errorf("chain %s rule 0 (%s) has no log rule before it", cd.chain.Name, renderRule(r))
					continue
				}
				prev := cd.rules[i-1]
				n := len(prev.Exprs)
				lg, ok := prev.Exprs[n-1].(*expr.Log)
				if !ok || n < 2 {
					t.Errorf("chain %s rule %d: before %s comes %s, want a log rule", cd.chain.Name, i, renderRule(r), renderRule(prev))
					continue
				}
				if _, ok := prev.Exprs[n-2].(*expr.Limit); !ok {
					t.Errorf("chain %s rule %d: log rule %s is not rate-limited", cd.chain.Name, i-1, renderRule(prev))
				}
				match := renderRule(&nftables.Rule{Exprs: r.Exprs[:len(r.Exprs)-1]})
				logMatch := prev.Exprs[:n-2]
				wantPrefix := "dcl s3 "
				if v.Kind == expr.VerdictAccept {
					logMatch = logMatch[len(ctNew()):]
					wantPrefix += ReasonAllow
				}
				if got := renderRule(&nftables.Rule{Exprs: logMatch}); got != match {
					t.Errorf("chain %s rule %d: log matches %s, verdict matches %s", cd.chain.Name, i, got, match)
				}
				if !strings.HasPrefix(string(lg.Data), wantPrefix) || lg.Group != 7 || lg.Key&(1<<unix.NFTA_LOG_GROUP) == 0 {
					t.Errorf("chain %s rule %d: log %+v, want group 7 and prefix %q", cd.chain.Name, i, lg, wantPrefix)
				}
				if v.Kind == expr.VerdictDrop && strings.HasSuffix(string(lg.Data), ReasonAllow) {
					t.Errorf("chain %s rule %d: a drop logged as %q", cd.chain.Name, i, lg.Data)
				}
			}
		}
	}
}

// TestLogPrefixParses checks that package flowlog reads back every prefix
// the rules use, with the right decision.
func TestLogPrefixParses(t *testing.T) {
	reasons := []string{ReasonAllow, ReasonDeny, ReasonSpoof, ReasonIPv6, ReasonBroadcast, ReasonMetadata, ReasonSlot, ReasonBlocked, ReasonHost}
	for _, idx := range []int{0, 3, 16383} {
		for _, r := range reasons {
			p := LogPrefix(idx, r)
			gotIdx, gotReason, ok := flowlog.ParsePrefix(p)
			if !ok || gotIdx != idx || gotReason != r {
				t.Errorf("flowlog.ParsePrefix(%q) = %d, %q, %v; want %d, %q, true", p, gotIdx, gotReason, ok, idx, r)
			}
			if (r == ReasonAllow) != (r == flowlog.ReasonAllow) {
				t.Errorf("reason %q: network and flowlog disagree on allow", r)
			}
		}
	}
	// Every log rule of a full ruleset uses one of these prefixes.
	fw, s := testFirewall()
	fw.logGroup = 7
	p, err := ParsePolicy(Policy{DenyOut: []string{"10.0.0.0/8"}, AllowOut: []string{"10.1.0.0/16"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, rs := range []ruleset{fw.base(), fw.slot(s), fw.policy(s, p)} {
		for _, cd := range rs.chains {
			for _, r := range cd.rules {
				for _, e := range r.Exprs {
					if lg, ok := e.(*expr.Log); ok {
						if _, reason, ok := flowlog.ParsePrefix(string(lg.Data)); !ok || !slices.Contains(reasons, reason) {
							t.Errorf("chain %s: log prefix %q is not a known reason", cd.chain.Name, lg.Data)
						}
					}
				}
			}
		}
	}
}
