package server

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestClaimOwner(t *testing.T) {
	prefix := fmt.Sprintf("tst%d", os.Getpid())
	dir1, dir2 := t.TempDir(), t.TempDir()
	o, err := claimOwner(dir1, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := claimOwner(dir1, prefix+"x"); err == nil || !strings.Contains(err.Error(), "in use by another declaw server") {
		t.Errorf("second claim of the state dir: %v, want in use", err)
	}
	if _, err := claimOwner(dir2, prefix); err == nil || !strings.Contains(err.Error(), "net prefix") {
		t.Errorf("second claim of the net prefix: %v, want refused", err)
	}
	o2, err := claimOwner(dir2, prefix+"x")
	if err != nil {
		t.Fatalf("other dir, other prefix: %v", err)
	}
	o2.release()
	o.release()
	o, err = claimOwner(dir1, prefix)
	if err != nil {
		t.Fatalf("claim after release: %v", err)
	}
	o.release()
}

func TestFlowLogGroup(t *testing.T) {
	if g := flowLogGroup(""); g != defaultFlowLogGroup {
		t.Errorf("default prefix: group %d, want %d", g, defaultFlowLogGroup)
	}
	a, b := flowLogGroup("db0900e0"), flowLogGroup("db557975")
	if a == b || a == defaultFlowLogGroup || a < 42000 || a >= 58000 {
		t.Errorf("groups %d, %d: want distinct, in [42000, 58000)", a, b)
	}
}
