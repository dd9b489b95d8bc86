package migrate

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"
)

func TestLoad(t *testing.T) {
	good := fstest.MapFS{
		"m/0002_audit_ts.sql": {Data: []byte("CREATE INDEX b;")},
		"m/0001_init.sql":     {Data: []byte("CREATE TABLE a;")},
	}
	got, err := Load(good, "m")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(got) != 2 || got[0].Version != 1 || got[0].Name != "init" || got[1].Version != 2 || got[1].SQL != "CREATE INDEX b;" {
		t.Fatalf("Load = %+v; want init then audit_ts", got)
	}
	for name, fsys := range map[string]fstest.MapFS{
		"gap":      {"m/0001_a.sql": {}, "m/0003_c.sql": {}},
		"repeat":   {"m/0001_a.sql": {}, "m/0001_b.sql": {}},
		"no one":   {"m/0002_b.sql": {}},
		"bad name": {"m/0001_a.sql": {}, "m/2_b.sql": {}},
		"stray":    {"m/0001_a.sql": {}, "m/README": {}},
		"empty":    {"m/.keep/x": {}},
	} {
		if _, err := Load(fsys, "m"); err == nil {
			t.Errorf("Load(%s) succeeded; want an error", name)
		}
	}
}

func TestPlan(t *testing.T) {
	all := []Migration{{Version: 1}, {Version: 2}, {Version: 3}}
	for _, tc := range []struct {
		current, want int
	}{{0, 3}, {1, 2}, {3, 0}} {
		got, err := Plan("db", tc.current, all)
		if err != nil || len(got) != tc.want || (tc.want > 0 && got[0].Version != tc.current+1) {
			t.Errorf("Plan(current %d) = %+v, %v; want %d steps from %d", tc.current, got, err, tc.want, tc.current+1)
		}
	}
	_, err := Plan("/x/declaw.db", 4, all)
	var tooNew *TooNewError
	if !errors.Is(err, ErrTooNew) || !errors.As(err, &tooNew) || tooNew.Have != 4 || tooNew.Known != 3 {
		t.Fatalf("Plan(current 4) = %v; want a TooNewError 4 > 3", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "/x/declaw.db") || !strings.Contains(msg, "newer declaw") || !strings.Contains(msg, "not changed") {
		t.Errorf("TooNewError message %q does not say which database, why and that it was left alone", msg)
	}
	if _, err := Plan("db", -1, all); err == nil {
		t.Error("Plan(current -1) succeeded")
	}
}
