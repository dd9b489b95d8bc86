// Package testenv holds the helpers that Declaw's end-to-end tests share: the
// root gate, a private two-namespace "internet" to run the server in, and
// the product binaries built once per test process.
//
// # Root gating
//
// RequireRoot skips a test when it is not running as root, except when the
// environment sets DECLAW_E2E=1 (CI does): then it fails, so CI never skips
// an end-to-end test silently. E2E reports that setting.
//
// # The network: test-host and uplink
//
// NewNet builds two network namespaces with unique names (derived from
// t.Name() plus a random suffix) and removes them in t.Cleanup, also when the
// test fails:
//
//	 test-host netns (Net.Host)             uplink netns (Net.Uplink): "the internet"
//	┌────────────────────────────────┐      ┌─────────────────────────────────────────┐
//	│ lo up                          │ veth │ 198.51.100.1/24   2001:db8::1/64         │
//	│ 198.51.100.2/24  2001:db8::2/64├──────┤ on lo (/32, /128): 198.51.100.10         │
//	│ default via 198.51.100.1       │      │   203.0.113.1  203.0.113.10              │
//	│ default via 2001:db8::1        │      │   2001:db8:1::1  2001:db8:1::10          │
//	│ ip_forward=1 (IPv4 and IPv6)   │      │   169.254.169.254  fd00:ec2::254         │
//	│ the server under test runs here│      │ route 10.200.0.0/16 via 198.51.100.2     │
//	└────────────────────────────────┘      │ NO default route, forwarding off         │
//	                                        └─────────────────────────────────────────┘
//
// The server under test runs in test-host; the sandboxes' namespaces hang off
// test-host. Everything test-host sends that is not local goes to the uplink,
// and the uplink has no route anywhere else, so nothing reaches this
// machine's real network (NewNet checks this: the uplink has no default route
// and a route lookup for 192.0.2.1, the real uplink's network, fails there).
// The server masquerades sandbox traffic, so replies go back to 198.51.100.2;
// the uplink also routes 10.200.0.0/16 (SandboxPrefix, the server's default
// sandbox range) back to test-host so that a packet that leaks un-NATed still
// arrives (and is recorded) and its reply is not silently lost.
//
// Processes started in test-host share this machine's mount namespace, so
// they read its /etc/resolv.conf, whose resolver is not reachable from
// test-host: point the server's upstream DNS at DNSServer (198.51.100.10:53).
//
// The uplink runs these recording services (see the constants and variables
// for the addresses):
//
//	HTTP      tcp/80    every uplink address; JSON echo of the request
//	                    (custom handlers: Net.HandleHTTP)
//	metadata  tcp/80    on 169.254.169.254 and fd00:ec2::254: a cloud-metadata
//	                    stand-in whose answers contain MetadataSecret
//	HTTPS     tcp/443   every uplink address; same handlers; leaf certificates
//	                    for any SNI (or the dialed IP) minted from a per-Net
//	                    test CA (Net.CAPEM, Net.CAFile, Net.CertPool)
//	TCP echo  tcp/9000  every uplink address; echoes and records bytes
//	UDP echo  udp/9001  each service address; echoes and records datagrams
//	DNS       53 udp+tcp every uplink address; authoritative for the zone in
//	                    DefaultZone (change it with Net.SetDNS), NXDOMAIN
//	                    otherwise; records every query
//
// Every TCP connection is recorded with the raw bytes the client sent (so a
// non-HTTP payload sent to port 80 is still visible), every HTTP request is
// also recorded parsed, and a packet capture on the uplink's veth records
// every IP packet that arrives from test-host (Net.Records().Packets), so a
// test can assert that nothing got out at all, whatever the port or protocol.
//
// # Example
//
//	func TestDenyAll(t *testing.T) {
//		n := testenv.NewNet(t) // skips unless root; fails under DECLAW_E2E=1
//		declaw, envd := testenv.BuildBinaries(t)
//		srv := n.Command(t.Context(), declaw, "server", "--envd", envd,
//			"--upstream-dns", testenv.DNSServer.String()) // (flag names illustrative)
//		srv.Env = append(os.Environ(), "SSL_CERT_FILE="+n.CAFile())
//		if err := srv.Start(); err != nil {
//			t.Fatal(err)
//		}
//		n.Reset() // forget the server's own start-up traffic
//		// ... create a deny-all sandbox and make it curl http://198.51.100.10/ ...
//		n.ExpectQuiet(time.Second) // no packet, connection, request or query arrived
//	}
//
//	func TestAllowed(t *testing.T) {
//		n := testenv.NewNet(t)
//		// ... a sandbox allowed api.example.test POSTs to it ...
//		r := n.WaitRecords(5*time.Second, func(r testenv.Records) bool { return len(r.HTTP) > 0 })
//		if got := r.HTTP[0]; got.Host != "api.example.test" || got.Remote.Addr() != testenv.HostIP {
//			t.Errorf("request %+v, want Host api.example.test masqueraded to %v", got, testenv.HostIP)
//		}
//	}
//
// # Talking to the uplink from test code
//
// Dial from test-host: Net.HTTPClient (trusts the test CA; names resolve
// through the uplink's DNS), Net.DialContext (names too), Net.Host.DialContext
// and Net.Host.Listen (IP literals only), or Net.Host.Do(fn) to run Go code
// inside the namespace on a locked OS thread. Namespaces are per thread, and
// Go runs parts of a dial on other threads (name resolution, and the IPv4 and
// IPv6 "happy eyeballs" race of a dual-stack name), which are in this
// machine's namespace: a plain net.Dial("tcp", "api.example.test:443") inside
// Do can leave through the real uplink. That is why Netns.DialContext refuses
// names, and why every socket these helpers create is checked (SIOCGSKNS) to
// be in the intended namespace before it connects or binds.
//
// # Processes in test-host
//
// Net.Command returns an unstarted command that runs inside test-host through
// nsenter --net (not ip netns exec, which remounts /sys and breaks runsc), in
// its own process group, killed when its context is done and again when the
// test ends; its output goes to the test log (set Stdout to nil before calling
// Output). Net.StartInHost also starts it and waits for it in t.Cleanup.
// Netns.Command is the bare version, with no cleanup or logging.
//
// # Cleanup and concurrency
//
// Close (registered with t.Cleanup) stops the services, deletes the veth and
// both namespaces and fails the test if anything is left. Each Net also
// leaves an owner marker in OwnerDir; a later NewNet removes the namespaces
// of Nets whose process died before its cleanups ran. Names are unique, so
// -count=2, two Nets in one test, and test binaries running side by side
// are fine; every namespace switch happens on a private locked thread, but
// root tests still follow the style rule of no t.Parallel.
//
// # Binaries
//
// BuildBinaries builds ./cmd/declaw and ./cmd/envd (static: CGO_ENABLED=0)
// once per test process, into a directory under os.TempDir keyed by a hash
// of the module's sources, so test binaries running in parallel or later
// reuse one build.
package testenv

import (
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"
)

// E2E reports whether the environment demands end-to-end tests
// (DECLAW_E2E=1, set by CI): then RequireRoot fails instead of skipping.
func E2E() bool { return os.Getenv("DECLAW_E2E") == "1" }

// RequireRoot skips t unless the process runs as root. When E2E() is true it
// fails t instead, so CI never skips a root test silently.
func RequireRoot(t testing.TB) {
	t.Helper()
	requireRoot(t, os.Geteuid(), E2E())
}

func requireRoot(t testing.TB, euid int, e2e bool) {
	t.Helper()
	if euid == 0 {
		return
	}
	if e2e {
		t.Fatalf("test needs root (euid %d) and DECLAW_E2E=1 forbids skipping it", euid)
		return
	}
	t.Skipf("test needs root (euid %d); set DECLAW_E2E=1 to make this a failure", euid)
}

// RequireTools skips t unless every named program is on $PATH; under E2E()
// it fails t instead, as RequireRoot does.
func RequireTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			Unavailable(t, "%s not installed: %v", n, err)
			return
		}
	}
}

// Unavailable reports that something an end-to-end test needs is missing:
// it fails t under E2E() and skips it otherwise. It is the one place that
// decides between the two, so no test skips silently in CI.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	unavailable(t, E2E(), format, args...)
}

func unavailable(t testing.TB, e2e bool, format string, args ...any) {
	t.Helper()
	if e2e {
		t.Fatalf("DECLAW_E2E=1 forbids skipping: "+format, args...)
		return
	}
	t.Skipf(format+" (set DECLAW_E2E=1 to make this a failure)", args...)
}

// WaitFor calls fn until it returns nil, polling with a short backoff, and
// fails t with fn's last error if that has not happened within timeout.
func WaitFor(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	if err := poll(timeout, fn); err != nil {
		t.Fatalf("WaitFor: still failing after %v: %v", timeout, err)
	}
}

// poll is WaitFor without the testing.TB.
func poll(timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	delay := 5 * time.Millisecond
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(min(delay, time.Until(deadline)+time.Millisecond))
		delay = min(delay*2, 100*time.Millisecond)
	}
}

var errNotYet = errors.New("condition not met yet")
