package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/testenv"
)

// probe is a tiny Python program run inside sandboxes:
//
//	probe.py tcp HOST PORT   -> OK | TIMEOUT | ERR:<errno name>
//	probe.py udp HOST PORT   -> OK | TIMEOUT | ERR:<errno name>
const probe = `import socket, sys, errno
kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
try:
    if kind == "tcp":
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect((host, port))
        s.sendall(b"probe\n")
        s.close()
    else:
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.settimeout(2)
        s.sendto(b"probe", (host, port))
        s.recvfrom(100)
    print("OK")
except socket.timeout:
    print("TIMEOUT")
except OSError as e:
    print("ERR:" + errno.errorcode.get(e.errno, str(e.errno)))
`

type prober struct {
	s  *server
	id string
}

func (s *server) prober(id string) prober {
	s.must(200, "POST", "/sandboxes/"+id+"/files", map[string]any{"path": "/tmp/probe.py", "data": probe}, nil)
	return prober{s, id}
}

func (p prober) try(kind, host string, port int) string {
	p.s.t.Helper()
	res := p.s.run(p.id, fmt.Sprintf("python3 /tmp/probe.py %s %s %d", kind, host, port))
	return strings.TrimSpace(res.Stdout + res.Stderr)
}

// expect asserts the outcome of a probe ("OK", "TIMEOUT" or a prefix such as "ERR").
func (p prober) expect(kind, host string, port int, want string) {
	p.s.t.Helper()
	if got := p.try(kind, host, port); !strings.HasPrefix(got, want) {
		p.s.t.Errorf("sandbox %s: %s %s:%d = %s, want %s", p.id, kind, host, port, got, want)
	}
}

func TestNetworkPolicy(t *testing.T) {
	s := startServer(t)
	svc, other := testenv.ServiceIP.String(), testenv.OtherIP.String()

	t.Run("default allows all", func(t *testing.T) {
		p := s.prober(s.create(nil))
		p.expect("tcp", svc, testenv.PortTCPEcho, "OK")
		p.expect("udp", svc, testenv.PortUDPEcho, "OK")
		p.expect("tcp", other, testenv.PortHTTP, "OK")
	})

	t.Run("deny all drops tcp udp icmp silently", func(t *testing.T) {
		id := s.create(map[string]any{"allow_internet_access": false})
		p := s.prober(id)
		s.net.Reset()
		p.expect("tcp", svc, testenv.PortTCPEcho, "TIMEOUT")
		p.expect("udp", svc, testenv.PortUDPEcho, "TIMEOUT")
		s.run(id, "ping -c 1 -W 2 "+svc)
		s.net.ExpectQuiet(500 * time.Millisecond)
	})

	t.Run("allow beats deny", func(t *testing.T) {
		p := s.prober(s.create(map[string]any{"network": map[string]any{
			"deny_out": []string{"0.0.0.0/0"}, "allow_out": []string{"198.51.100.0/24"}}}))
		p.expect("tcp", svc, testenv.PortTCPEcho, "OK")
		p.expect("tcp", other, testenv.PortTCPEcho, "TIMEOUT")
		p2 := s.prober(s.create(map[string]any{"network": map[string]any{"deny_out": []string{other + "/32"}}}))
		p2.expect("tcp", svc, testenv.PortTCPEcho, "OK")
		p2.expect("tcp", other, testenv.PortTCPEcho, "TIMEOUT")
	})

	t.Run("always blocked", func(t *testing.T) {
		id := s.create(map[string]any{"network": map[string]any{"allow_out": []string{"0.0.0.0/0", "169.254.169.254", "10.0.0.0/8"}}})
		p := s.prober(id)
		victim := s.create(nil)
		var vinfo info
		var raw map[string]any
		s.must(200, "GET", "/sandboxes/"+victim, nil, &raw)
		_ = vinfo
		victimIP := raw["guest_ip"].(string)
		s.run(victim, "nohup python3 -m http.server 8000 >/dev/null 2>&1 &")
		var me map[string]any
		s.must(200, "GET", "/sandboxes/"+id, nil, &me)
		gw := gatewayOf(t, me["guest_ip"].(string))

		// A service of the host (test-host) on all its addresses.
		ln, err := s.net.Host.Listen("tcp", "0.0.0.0:7777")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		s.net.Reset()
		p.expect("tcp", testenv.MetadataIP.String(), 80, "TIMEOUT")
		p.expect("tcp", gw, 8080, "TIMEOUT")                      // the API's port on the gateway
		p.expect("tcp", gw, 7777, "TIMEOUT")                      // a host service via the gateway
		p.expect("tcp", testenv.HostIP.String(), 7777, "TIMEOUT") // ... via the host's uplink address
		p.expect("tcp", victimIP, 8000, "TIMEOUT")                // another sandbox
		p.expect("tcp", victimIP, 49983, "TIMEOUT")               // another sandbox's envd
		p.expect("tcp", testenv.ServiceIP6.String(), 80, "ERR")   // IPv6 is off
		p.expect("tcp", testenv.MetadataIP6.String(), 80, "ERR")
		for _, h := range s.net.Records().HTTP {
			if h.Service == testenv.SvcMetadata {
				t.Errorf("the metadata service was reached: %+v", h)
			}
		}
		// The sandbox's own DNS resolver on the gateway stays reachable.
		if res := s.run(id, "getent ahostsv4 api.example.test"); res.ExitCode != 0 {
			t.Errorf("DNS through the gateway failed: %+v", res)
		}
	})

	t.Run("root inside cannot reroute around the policy", func(t *testing.T) {
		id := s.create(map[string]any{"allow_internet_access": false})
		p := s.prober(id)
		s.run(id, "ip route flush all; ip addr add 203.0.113.50/24 dev eth0; ip route add default dev eth0; ip -6 addr add 2001:db8::99/64 dev eth0; sysctl -w net.ipv6.conf.all.disable_ipv6=0")
		s.net.Reset()
		p.expect("tcp", svc, testenv.PortTCPEcho, "")
		p.expect("tcp", other, testenv.PortTCPEcho, "")
		s.net.ExpectQuiet(500 * time.Millisecond)
	})

	t.Run("runtime update", func(t *testing.T) {
		id := s.create(nil)
		p := s.prober(id)
		p.expect("tcp", svc, testenv.PortTCPEcho, "OK")
		// A long-lived connection established before the update is cut.
		s.must(200, "POST", "/sandboxes/"+id+"/commands", map[string]any{"background": true, "timeout": 0,
			"cmd": fmt.Sprintf(`python3 -c 'import socket,time
s=socket.create_connection(("%s",%d)); open("/tmp/conn","w").write("up")
while True:
    try:
        s.sendall(b"x"); time.sleep(0.2)
    except OSError as e:
        open("/tmp/conn","w").write("cut"); break'`, svc, testenv.PortTCPEcho)}, nil)
		waitFile(t, s, id, "/tmp/conn", "up")
		s.must(200, "PUT", "/sandboxes/"+id+"/network", map[string]any{"deny_out": []string{"0.0.0.0/0"}}, nil)
		p.expect("tcp", svc, testenv.PortTCPEcho, "TIMEOUT")
		s.net.Reset()
		time.Sleep(1500 * time.Millisecond)
		for _, pk := range s.net.Records().Packets {
			if pk.Proto == "tcp" && pk.DstPort == testenv.PortTCPEcho && pk.TCPFlags&0x08 != 0 {
				t.Errorf("data still flows on the old connection after the update: %s", pk)
				break
			}
		}
		s.must(200, "PUT", "/sandboxes/"+id+"/network", map[string]any{"allow_out": []string{"0.0.0.0/0"}}, nil)
		p.expect("tcp", svc, testenv.PortTCPEcho, "OK")
		if code, b := s.do("PUT", "/sandboxes/"+id+"/network", map[string]any{"allow_out": []string{"10.0.0.0/33"}}); code != 400 || !strings.Contains(string(b), "10.0.0.0/33") {
			t.Errorf("bad entry: %d %s, want 400 naming the entry", code, b)
		}
	})
}

// gatewayOf returns the host side of a sandbox's /30 link.
func gatewayOf(t *testing.T, guest string) string {
	ip := net.ParseIP(guest).To4()
	if ip == nil {
		t.Fatalf("guest ip %q", guest)
	}
	ip[3]--
	return ip.String()
}

func waitFile(t *testing.T, s *server, id, path, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		code, b := s.do("GET", "/sandboxes/"+id+"/files?path="+path, nil)
		if code == 200 && string(b) == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s never became %q", path, want)
}

var _ = context.Background

// TestConnectionAudit: the firewall's decisions (not only the proxy's) are
// in the sandbox's audit trail.
func TestConnectionAudit(t *testing.T) {
	s := startServer(t)
	closed := s.create(map[string]any{"allow_internet_access": false})
	open := s.create(nil)
	s.prober(closed).expect("tcp", testenv.ServiceIP.String(), testenv.PortTCPEcho, "TIMEOUT")
	s.prober(open).expect("tcp", testenv.ServiceIP.String(), testenv.PortTCPEcho, "OK")
	s.prober(open).expect("tcp", testenv.MetadataIP.String(), 80, "TIMEOUT")
	want := map[string]string{
		closed: "network.blocked " + testenv.ServiceIP.String() + ":9000 deny",
		open:   "network.allowed " + testenv.ServiceIP.String() + ":9000 allow",
	}
	wantMeta := "network.blocked " + testenv.MetadataIP.String() + ":80 meta"
	deadline := time.Now().Add(10 * time.Second)
	for {
		found := map[string]bool{}
		for _, id := range []string{closed, open} {
			var audit struct {
				Events []struct {
					Type string            `json:"type"`
					Data map[string]string `json:"data"`
				} `json:"events"`
			}
			s.must(200, "GET", "/sandboxes/"+id+"/audit?type=network&limit=1000", nil, &audit)
			for _, e := range audit.Events {
				found[id+" "+e.Type+" "+e.Data["dst"]+" "+e.Data["rule"]] = true
			}
		}
		if found[closed+" "+want[closed]] && found[open+" "+want[open]] && found[open+" "+wantMeta] {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit lacks connection decisions; want %q, %q and %q; have %v", want[closed], want[open], wantMeta, found)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
