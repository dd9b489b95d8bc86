package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeTB records Skip and Fatal instead of acting on them.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper()                       {}
func (f *fakeTB) Skipf(format string, a ...any) { f.skipped = fmt.Sprintf(format, a...) }
func (f *fakeTB) Fatalf(format string, a ...any) {
	f.failed = fmt.Sprintf(format, a...)
}

func TestRequireRoot(t *testing.T) {
	tests := []struct {
		euid             int
		e2e              bool
		wantSkip, wantFa bool
	}{
		{0, false, false, false},
		{0, true, false, false},
		{1000, false, true, false},
		{1000, true, false, true},
	}
	for _, tt := range tests {
		f := &fakeTB{TB: t}
		requireRoot(f, tt.euid, tt.e2e)
		if (f.skipped != "") != tt.wantSkip || (f.failed != "") != tt.wantFa {
			t.Errorf("requireRoot(euid %d, e2e %v): skipped %q failed %q; want skip %v fail %v",
				tt.euid, tt.e2e, f.skipped, f.failed, tt.wantSkip, tt.wantFa)
		}
	}
}

func TestE2E(t *testing.T) {
	for _, tt := range []struct {
		v    string
		want bool
	}{{"1", true}, {"", false}, {"0", false}, {"true", false}} {
		t.Setenv("DECLAW_E2E", tt.v)
		if got := E2E(); got != tt.want {
			t.Errorf("E2E() with DECLAW_E2E=%q = %v, want %v", tt.v, got, tt.want)
		}
	}
}

func TestPoll(t *testing.T) {
	calls := 0
	if err := poll(time.Second, func() error {
		if calls++; calls < 3 {
			return errNotYet
		}
		return nil
	}); err != nil || calls != 3 {
		t.Errorf("poll = %v after %d calls, want nil after 3", err, calls)
	}
	start := time.Now()
	errLast := errors.New("last")
	if err := poll(50*time.Millisecond, func() error { return errLast }); err != errLast {
		t.Errorf("poll timeout = %v, want %v", err, errLast)
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > time.Second {
		t.Errorf("poll with 50ms timeout took %v", d)
	}
}

func TestNameToken(t *testing.T) {
	seen := map[string]bool{}
	for _, name := range []string{"TestFoo", "TestFoo/sub_case#01", "Test", "TestÜberLongNameThatGoesOn", "BenchmarkX"} {
		tok := nameToken(name)
		if len(tok) > 11 || len("dh"+tok) > 15 || len("vh"+tok) > 15 {
			t.Errorf("nameToken(%q) = %q: too long", name, tok)
		}
		if strings.Trim(tok, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
			t.Errorf("nameToken(%q) = %q: not lower-case alphanumeric", name, tok)
		}
		if seen[tok] {
			t.Errorf("nameToken(%q) = %q: repeated", name, tok)
		}
		seen[tok] = true
	}
	if tok := nameToken("TestFoo"); !strings.HasPrefix(tok, "foo") {
		t.Errorf("nameToken(TestFoo) = %q, want prefix foo", tok)
	}
}

func TestZoneLookup(t *testing.T) {
	z := &zone{}
	for name, addrs := range DefaultZone() {
		z.set(name, addrs)
	}
	z.set("gone.test", []netip.Addr{ServiceIP})
	z.set("gone.test", nil)
	z.set("Exact.Evil.Test.", []netip.Addr{GatewayIP})
	tests := []struct {
		name string
		want []netip.Addr
		ok   bool
	}{
		{"api.example.test", []netip.Addr{ServiceIP, ServiceIP6}, true},
		{"API.EXAMPLE.TEST.", []netip.Addr{ServiceIP, ServiceIP6}, true},
		{"allowed.test", []netip.Addr{ServiceIP, ServiceIP6}, true},
		{"a.b.allowed.test", []netip.Addr{ServiceIP, ServiceIP6}, true},
		{"evil.test", []netip.Addr{OtherIP}, true},
		{"exact.evil.test", []netip.Addr{GatewayIP}, true},
		{"x.exact.evil.test", []netip.Addr{OtherIP}, true},
		{"other.example.test", nil, false},
		{"gone.test", nil, false},
		{"test", nil, false},
		{"", nil, false},
	}
	for _, tt := range tests {
		got, ok := z.lookup(tt.name)
		if ok != tt.ok || !slices.Equal(got, tt.want) {
			t.Errorf("lookup(%q) = %v, %v; want %v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParsePacket(t *testing.T) {
	ipv4TCP := []byte{
		0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, // DF, TTL 64, TCP
		10, 200, 0, 2, 203, 0, 113, 10,
		0x30, 0x39, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0, 0, 0, 0, 0, 0,
	}
	ipv6UDP := append([]byte{
		0x60, 0, 0, 0, 0, 8, 17, 64,
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
		0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
	}, 0xd4, 0x31, 0, 53, 0, 8, 0, 0)
	mld := append([]byte{
		0x60, 0, 0, 0, 0, 16, 0, 1, // hop-by-hop
		0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
		0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x16,
	}, 58, 0, 5, 2, 0, 0, 1, 0, 143, 0, 0, 0, 0, 0, 0, 0)
	icmp4 := []byte{
		0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0,
		198, 51, 100, 2, 169, 254, 169, 254,
		8, 0, 0, 0, 0, 0, 0, 0,
	}
	fragment4 := slices.Clone(ipv4TCP)
	fragment4[6], fragment4[7] = 0, 10 // offset 80 bytes: no ports
	tests := []struct {
		name  string
		ether uint16
		b     []byte
		want  Packet
		ok    bool
	}{
		{"ipv4 tcp syn", 0x0800, ipv4TCP, Packet{
			Src: netip.MustParseAddr("10.200.0.2"), Dst: OtherIP, Proto: "tcp", SrcPort: 12345, DstPort: 80, TCPFlags: 0x02, Len: 40,
		}, true},
		{"ipv4 fragment", 0x0800, fragment4, Packet{
			Src: netip.MustParseAddr("10.200.0.2"), Dst: OtherIP, Proto: "tcp", Len: 40,
		}, true},
		{"ipv6 udp", 0x86dd, ipv6UDP, Packet{Src: HostIP6, Dst: ServiceIP6, Proto: "udp", SrcPort: 54321, DstPort: 53, Len: 48}, true},
		{"mld is noise", 0x86dd, mld, Packet{}, false},
		{"icmp echo", 0x0800, icmp4, Packet{Src: HostIP, Dst: MetadataIP, Proto: "icmp", ICMPType: 8, Len: 28}, true},
		{"arp", 0x0806, make([]byte, 28), Packet{}, false},
		{"short", 0x0800, ipv4TCP[:10], Packet{}, false},
	}
	for _, tt := range tests {
		got, ok := parsePacket(tt.ether, tt.b)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("%s: parsePacket = %+v, %v; want %+v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestRecordsSnapshotIsACopy(t *testing.T) {
	r := &recorder{}
	cr := r.newConn(Conn{Service: SvcTCPEcho})
	cr.add([]byte("abc"))
	snap := r.snapshot()
	cr.add([]byte("def"))
	if got := string(snap.Conns[0].Data); got != "abc" {
		t.Errorf("snapshot Data = %q after more writes, want %q", got, "abc")
	}
	if got := string(r.snapshot().Conns[0].Data); got != "abcdef" {
		t.Errorf("second snapshot Data = %q, want %q", got, "abcdef")
	}
	if r.snapshot().Empty() {
		t.Error("Empty() = true with a conn recorded")
	}
	r.reset()
	if !r.snapshot().Empty() {
		t.Error("Empty() = false after reset")
	}
}

// writeModule makes a tiny module with cmd/declaw, cmd/envd and cmd/declaw-init.
func writeModule(t *testing.T, envdMain string) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"go.mod":                  "module example.test/fake\n\ngo 1.26\n",
		"cmd/declaw/main.go":      "package main\n\nfunc main() { println(\"declaw\") }\n",
		"cmd/envd/main.go":        envdMain,
		"cmd/declaw-init/main.go": "package main\n\nfunc main() { println(\"init\") }\n",
		"cmd/envd/x_test.go":      "package main\n",
		"testdata/ignored.go":     "ignored",
		"bin/declaw":              "old build output",
		"README.md":               "top-level docs",
	}
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestBuildBinariesFakeModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	t.Setenv("TMPDIR", t.TempDir()) // keep the build cache private
	root := writeModule(t, "package main\n\nfunc main() {}\n")
	k1, err := sourceKey(root)
	if err != nil {
		t.Fatal(err)
	}
	// Test files and testdata do not change the key; sources do.
	os.WriteFile(filepath.Join(root, "cmd/envd/x_test.go"), []byte("package main // changed\n"), 0o644)
	os.WriteFile(filepath.Join(root, "testdata/ignored.go"), []byte("changed"), 0o644)
	os.WriteFile(filepath.Join(root, "bin/declaw"), []byte("changed"), 0o644)
	os.WriteFile(filepath.Join(root, "README.md"), []byte("changed"), 0o644)
	if k2, _ := sourceKey(root); k2 != k1 {
		t.Errorf("sourceKey changed with test, testdata, bin or docs edits: %s -> %s", k1, k2)
	}

	declaw, envd, err := buildBinaries(root)
	if err != nil {
		t.Fatalf("buildBinaries: %v", err)
	}
	for _, p := range []string{declaw, envd} {
		if !isExecutable(p) {
			t.Errorf("%s is not an executable", p)
		}
		if !strings.HasPrefix(p, os.TempDir()) || !strings.Contains(p, k1) {
			t.Errorf("%s not in the cache dir for key %s under %s", p, k1, os.TempDir())
		}
	}
	// A second build reuses the cache.
	fi1, _ := os.Stat(declaw)
	declaw2, _, err := buildBinaries(root)
	if err != nil || declaw2 != declaw {
		t.Fatalf("second buildBinaries = %q, %v; want %q", declaw2, err, declaw)
	}
	if fi2, _ := os.Stat(declaw2); !fi2.ModTime().Equal(fi1.ModTime()) {
		t.Errorf("second buildBinaries rebuilt %s", declaw2)
	}

	// A compile error is reported with the compiler's output and the package.
	os.WriteFile(filepath.Join(root, "cmd/envd/main.go"), []byte("package main\n\nfunc main() { undefinedThing() }\n"), 0o644)
	if k3, _ := sourceKey(root); k3 == k1 {
		t.Errorf("sourceKey unchanged after a source edit")
	}
	_, _, err = buildBinaries(root)
	if err == nil || !strings.Contains(err.Error(), "./cmd/envd") || !strings.Contains(err.Error(), "undefinedThing") {
		t.Errorf("buildBinaries with a broken envd = %v; want an error naming ./cmd/envd and undefinedThing", err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(os.TempDir(), buildCachePrefix+"tmp-*")); len(leftovers) != 0 {
		t.Errorf("temporary build dirs left: %v", leftovers)
	}
}

func TestModuleRoot(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "internal", "testenv")); err != nil {
		t.Errorf("ModuleRoot() = %s, which has no internal/testenv: %v", root, err)
	}
}

// TestBuildBinaries builds the real cmd/declaw and cmd/envd.
func TestBuildBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"cmd/declaw", "cmd/envd"} {
		if m, _ := filepath.Glob(filepath.Join(root, cmd, "*.go")); len(m) == 0 {
			t.Skipf("%s has no Go files yet", cmd)
		}
	}
	declaw, envd := BuildBinaries(t)
	declaw2, envd2 := BuildBinaries(t)
	if declaw2 != declaw || envd2 != envd {
		t.Errorf("second BuildBinaries = %s %s, want %s %s", declaw2, envd2, declaw, envd)
	}
	for _, p := range []string{declaw, envd, filepath.Join(filepath.Dir(declaw), "declaw-init")} {
		if !isExecutable(p) {
			t.Errorf("%s is not executable", p)
		}
	}
	// envd must be static: no ELF interpreter.
	if b, err := os.ReadFile(envd); err == nil && bytes.Contains(b[:min(len(b), 4096)], []byte("ld-linux")) {
		t.Errorf("%s is dynamically linked", envd)
	}
}
