package nsrun

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/declaw/declaw/internal/testenv"
)

func TestStartAndDo(t *testing.T) {
	testenv.RequireRoot(t)
	b := make([]byte, 4)
	rand.Read(b)
	name := fmt.Sprintf("nsrun-%x", b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	path := "/var/run/netns/" + name
	self, _ := os.Readlink("/proc/self/ns/net")
	var inside string
	if err := Do(path, func() error {
		var err error
		inside, err = os.Readlink("/proc/thread-self/ns/net")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inside == self {
		t.Fatalf("Do ran in the caller's namespace %s", self)
	}
	cmd := exec.Command("ip", "-o", "link")
	var out strings.Builder
	cmd.Stdout = &out
	if err := Start(path, cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out.String()); strings.Count(got, "\n") != 0 || !strings.Contains(got, "lo:") {
		t.Fatalf("a process started in a fresh netns sees other links: %q", got)
	}
	if now, _ := os.Readlink("/proc/self/ns/net"); now != self {
		t.Fatalf("the caller's namespace changed: %s -> %s", self, now)
	}
	if err := Do("/nonexistent/netns", func() error { return nil }); err == nil {
		t.Fatal("Do with a missing namespace succeeded")
	}
}
