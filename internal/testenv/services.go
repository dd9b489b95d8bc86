package testenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// MetadataSecret appears in every answer of the metadata stand-in, so a test
// can grep a sandbox's output or the audit log for it.
const MetadataSecret = "declaw-testenv-metadata-secret-7f3a"

// EchoReply is the JSON body the uplink's HTTP and HTTPS echo handler answers.
type EchoReply struct {
	Service string      `json:"service"` // SvcHTTP or SvcHTTPS
	Method  string      `json:"method"`
	Host    string      `json:"host"`
	URI     string      `json:"uri"`
	Proto   string      `json:"proto"`
	Header  http.Header `json:"header"`
	Body    string      `json:"body"`
	Remote  string      `json:"remote"` // as the uplink saw the client
	Local   string      `json:"local"`  // the address the client dialed
	SNI     string      `json:"sni,omitempty"`
}

// DefaultZone returns the records the uplink's DNS service starts with.
// A name "*.x" answers every name below x that has no record of its own.
func DefaultZone() map[string][]netip.Addr {
	svc := []netip.Addr{ServiceIP, ServiceIP6}
	return map[string][]netip.Addr{
		"example.test":     svc,
		"api.example.test": svc,
		"allowed.test":     svc,
		"*.allowed.test":   svc,
		"evil.test":        {OtherIP},
		"*.evil.test":      {OtherIP},
		"rebind.test":      {MetadataIP}, // a public name resolving to metadata
	}
}

// zone is the DNS service's name -> addresses map; safe for concurrent use.
type zone struct {
	mu sync.RWMutex
	m  map[string][]netip.Addr
}

func canonicalName(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

func (z *zone) set(name string, addrs []netip.Addr) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.m == nil {
		z.m = make(map[string][]netip.Addr)
	}
	if len(addrs) == 0 {
		delete(z.m, canonicalName(name))
		return
	}
	z.m[canonicalName(name)] = append([]netip.Addr(nil), addrs...)
}

// lookup finds name's addresses: an exact entry, else the closest "*.parent".
func (z *zone) lookup(name string) ([]netip.Addr, bool) {
	name = canonicalName(name)
	z.mu.RLock()
	defer z.mu.RUnlock()
	if a, ok := z.m[name]; ok {
		return a, true
	}
	for rest := name; ; {
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			return nil, false
		}
		rest = rest[i+1:]
		if a, ok := z.m["*."+rest]; ok {
			return a, true
		}
	}
}

// services are the uplink's recording servers.
type services struct {
	rec  *recorder
	ca   *testCA
	zone *zone
	mux  *http.ServeMux // custom handlers; "/" is the echo

	wg      sync.WaitGroup
	mu      sync.Mutex
	closers []func() error
	closed  bool
	conns   map[net.Conn]struct{} // open echo connections
}

func newServices(rec *recorder, ca *testCA) *services {
	s := &services{
		rec:   rec,
		ca:    ca,
		zone:  &zone{},
		mux:   http.NewServeMux(),
		conns: make(map[net.Conn]struct{}),
	}
	for name, addrs := range DefaultZone() {
		s.zone.set(name, addrs)
	}
	s.mux.HandleFunc("/", s.echo)
	return s
}

func (s *services) onClose(f func() error) {
	s.mu.Lock()
	s.closers = append(s.closers, f)
	s.mu.Unlock()
}

func (s *services) goServe(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// start creates every listener inside ns and starts serving. udpAddrs are the
// addresses the UDP echo binds one by one (a wildcard UDP socket would answer
// from the wrong source address).
func (s *services) start(ns Netns, udpAddrs []netip.Addr) error {
	var (
		http80, https443, echo9000, dns53 net.Listener
		dnsUDP                            net.PacketConn
		udp9001                           []*net.UDPConn
	)
	// Every socket is checked to be in ns before it binds.
	lc := &net.ListenConfig{Control: ns.checkSocket}
	ctx := context.Background()
	err := ns.Do(func() error {
		var err error
		listen := func(port uint16) net.Listener {
			if err != nil {
				return nil
			}
			var l net.Listener
			l, err = lc.Listen(ctx, "tcp", fmt.Sprintf(":%d", port)) // dual-stack wildcard
			if l != nil {
				s.onClose(l.Close)
			}
			return l
		}
		http80, https443, echo9000, dns53 = listen(PortHTTP), listen(PortHTTPS), listen(PortTCPEcho), listen(PortDNS)
		if err != nil {
			return err
		}
		if dnsUDP, err = lc.ListenPacket(ctx, "udp", fmt.Sprintf(":%d", PortDNS)); err != nil {
			return err
		}
		s.onClose(dnsUDP.Close)
		for _, a := range udpAddrs {
			pc, err := lc.ListenPacket(ctx, "udp", netip.AddrPortFrom(a, PortUDPEcho).String())
			if err != nil {
				return err
			}
			s.onClose(pc.Close)
			udp9001 = append(udp9001, pc.(*net.UDPConn))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("listen in uplink: %w", err)
	}

	// HTTP and HTTPS share one handler; the metadata stand-in is picked by address.
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0), // TLS failures are expected in tests
	}
	s.onClose(hs.Close)
	s.goServe(func() { hs.Serve(s.recording(http80, SvcHTTP)) })
	tlsConf := &tls.Config{
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if rc, ok := hello.Conn.(*recConn); ok {
				rc.rec.setSNI(hello.ServerName)
			}
			return nil, nil
		},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			name := hello.ServerName
			if name == "" {
				name = addrPort(hello.Conn.LocalAddr()).Addr().String()
			}
			return s.ca.leaf(name)
		},
		NextProtos: []string{"h2", "http/1.1"},
	}
	s.goServe(func() { hs.Serve(tls.NewListener(s.recording(https443, SvcHTTPS), tlsConf)) })

	s.goServe(func() { s.serveTCPEcho(s.recording(echo9000, SvcTCPEcho)) })
	for _, c := range udp9001 {
		s.goServe(func() { s.serveUDPEcho(c) })
	}

	// DNS over UDP and TCP; wait until both serve so Shutdown cannot race Start.
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	for _, srv := range []*dns.Server{
		{PacketConn: dnsUDP, Handler: s, NotifyStartedFunc: notify},
		{Listener: dns53, Handler: s, NotifyStartedFunc: notify},
	} {
		s.goServe(func() { srv.ActivateAndServe() })
		s.onClose(srv.Shutdown)
	}
	for range 2 {
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			return errors.New("DNS service did not start")
		}
	}
	return nil
}

// close stops every service, closes open connections, and waits for the
// serving goroutines to return.
func (s *services) close() {
	s.mu.Lock()
	closers := s.closers
	s.closers = nil
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	// Errors are ignored: listeners are closed twice by design (by their
	// server and by us), and the namespace goes away next anyway.
	for i := len(closers) - 1; i >= 0; i-- {
		closers[i]()
	}
	s.wg.Wait()
}

// recording wraps l so each accepted connection is recorded with its bytes.
func (s *services) recording(l net.Listener, service string) net.Listener {
	return &recListener{Listener: l, s: s, service: service}
}

type recListener struct {
	net.Listener
	s       *services
	service string
}

func (l *recListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	local := addrPort(c.LocalAddr())
	svc := l.service
	if svc == SvcHTTP && isMetadata(local.Addr()) {
		svc = SvcMetadata
	}
	cr := l.s.rec.newConn(Conn{Service: svc, Local: local, Remote: addrPort(c.RemoteAddr()), Time: time.Now()})
	return &recConn{Conn: c, rec: cr}, nil
}

// recConn records every byte read from the connection.
type recConn struct {
	net.Conn
	rec *connRecord
}

func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.rec.add(p[:n])
	}
	return n, err
}

func (s *services) serveTCPEcho(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.goServe(func() {
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			io.Copy(c, c)
		})
	}
}

func (s *services) serveUDPEcho(c *net.UDPConn) {
	buf := make([]byte, 64<<10)
	local := addrPort(c.LocalAddr())
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		data := bytes.Clone(buf[:n])
		s.rec.addDatagram(Datagram{Service: SvcUDPEcho, Local: local, Remote: from, Data: data, Time: time.Now()})
		c.WriteToUDPAddrPort(data, from)
	}
}

// ServeHTTP records the request, then answers as the metadata stand-in or
// through the mux (echo unless a test registered something more specific).
func (s *services) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	lap := addrPort(local)
	remote, _ := netip.ParseAddrPort(r.RemoteAddr)
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	svc, sni := SvcHTTP, ""
	if r.TLS != nil {
		svc, sni = SvcHTTPS, r.TLS.ServerName
	}
	if isMetadata(lap.Addr()) {
		svc = SvcMetadata
	}
	// The record keeps the first maxRecordedBytes; handlers read it all.
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxRecordedBytes))
	r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), r.Body))
	s.rec.addHTTP(HTTPRequest{
		Service: svc, Local: lap, Remote: remote, SNI: sni,
		Method: r.Method, Host: r.Host, URI: r.RequestURI,
		Header: r.Header.Clone(), Body: body, Time: time.Now(),
	})
	if svc == SvcMetadata {
		serveMetadata(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *services) echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	remote, _ := netip.ParseAddrPort(r.RemoteAddr)
	rep := EchoReply{
		Service: SvcHTTP, Method: r.Method, Host: r.Host, URI: r.RequestURI, Proto: r.Proto,
		Header: r.Header, Body: string(body),
		Remote: netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()).String(),
		Local:  addrPort(local).String(),
	}
	if r.TLS != nil {
		rep.Service, rep.SNI = SvcHTTPS, r.TLS.ServerName
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(rep)
}

// serveMetadata imitates a cloud instance-metadata service just enough that
// a leak is unmistakable: every answer carries MetadataSecret.
func serveMetadata(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{
		"Code":            "Success",
		"Path":            r.URL.Path,
		"AccessKeyId":     "ASIADECLAWTESTENV",
		"SecretAccessKey": MetadataSecret,
	})
}

// ServeDNS answers from the zone and records each question.
func (s *services) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	proto := "udp"
	if _, ok := w.LocalAddr().(*net.TCPAddr); ok {
		proto = "tcp"
	}
	for _, q := range req.Question {
		s.rec.addDNS(DNSQuery{
			Proto: proto, Local: addrPort(w.LocalAddr()), Remote: addrPort(w.RemoteAddr()),
			Name: canonicalName(q.Name), Type: dns.TypeToString[q.Qtype], Time: time.Now(),
		})
		addrs, ok := s.zone.lookup(q.Name)
		if !ok {
			m.Rcode = dns.RcodeNameError
			continue
		}
		hdr := func(t uint16) dns.RR_Header {
			return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: 5}
		}
		for _, a := range addrs {
			switch {
			case q.Qtype == dns.TypeA && a.Is4():
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: a.AsSlice()})
			case q.Qtype == dns.TypeAAAA && a.Is6():
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: a.AsSlice()})
			}
		}
	}
	w.WriteMsg(m)
}

func isMetadata(a netip.Addr) bool { return a == MetadataIP || a == MetadataIP6 }

// addrPort converts a TCP or UDP net.Addr, unmapping IPv4-in-IPv6.
func addrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	default:
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
