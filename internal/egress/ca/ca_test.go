package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCACertificate(t *testing.T) {
	c, err := New("sbx-1")
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	block, rest := pem.Decode(c.CertPEM())
	if block == nil || block.Type != "CERTIFICATE" || len(rest) != 0 {
		t.Fatalf("CertPEM is not one PEM certificate: %q", c.CertPEM())
	}
	if strings.Contains(string(c.CertPEM()), "PRIVATE") {
		t.Fatal("CertPEM contains a private key")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cert.Subject.CommonName, "Declaw CA - sbx-1"; got != want {
		t.Errorf("CN = %q, want %q", got, want)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("not a CA: IsCA %v usage %v", cert.IsCA, cert.KeyUsage)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("key %T, want ECDSA P-256", cert.PublicKey)
	}
	now := time.Now()
	if d := now.Sub(cert.NotBefore); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("NotBefore %v is %v before now, want 1h", cert.NotBefore, d)
	}
	if d := cert.NotAfter.Sub(now); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("NotAfter %v is %v after now, want 24h", cert.NotAfter, d)
	}
	c2, err := NewWithOptions("sbx-2", Options{Validity: 72 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if d := c2.Certificate().NotAfter.Sub(now); d < 71*time.Hour {
		t.Errorf("Validity 72h: NotAfter %v after now", d)
	}
}

func TestLeafVerifies(t *testing.T) {
	c, err := New("sbx-1")
	if err != nil {
		t.Fatal(err)
	}
	other, err := New("sbx-2")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"api.example.test", "API.Example.Test.", "198.51.100.10", "2001:db8::10"} {
		t.Run(name, func(t *testing.T) {
			leaf, err := c.Leaf(name)
			if err != nil {
				t.Fatalf("Leaf(%q): %v", name, err)
			}
			want := strings.TrimSuffix(strings.ToLower(name), ".")
			opts := x509.VerifyOptions{Roots: c.Pool(), DNSName: want, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
			if _, err := leaf.Leaf.Verify(opts); err != nil {
				t.Errorf("leaf for %q does not verify against its CA: %v", name, err)
			}
			if ip := net.ParseIP(want); ip != nil {
				if len(leaf.Leaf.IPAddresses) != 1 || !leaf.Leaf.IPAddresses[0].Equal(ip) || len(leaf.Leaf.DNSNames) != 0 {
					t.Errorf("IP leaf SANs: DNS %v IP %v", leaf.Leaf.DNSNames, leaf.Leaf.IPAddresses)
				}
			} else if len(leaf.Leaf.DNSNames) != 1 || leaf.Leaf.DNSNames[0] != want {
				t.Errorf("DNS SANs %v, want [%s]", leaf.Leaf.DNSNames, want)
			}
			opts.Roots = other.Pool()
			if _, err := leaf.Leaf.Verify(opts); err == nil {
				t.Error("leaf verifies against another sandbox's CA")
			}
			opts.Roots, opts.DNSName = c.Pool(), "evil.test"
			if _, err := leaf.Leaf.Verify(opts); err == nil {
				t.Error("leaf verifies for another name")
			}
			if leaf.Leaf.NotAfter.After(c.Certificate().NotAfter) {
				t.Errorf("leaf outlives the CA")
			}
		})
	}
	if _, err := c.Leaf(""); err == nil {
		t.Error("Leaf(\"\") succeeded")
	}
}

func TestLeafCache(t *testing.T) {
	c, err := NewWithOptions("sbx", Options{LeafCache: 2})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	certs := make([]any, 16)
	for i := range certs {
		wg.Go(func() {
			l, err := c.Leaf("a.test")
			if err != nil {
				t.Error(err)
				return
			}
			certs[i] = l
		})
	}
	wg.Wait()
	if c.Minted() != 1 {
		t.Errorf("16 concurrent Leaf(a.test): %d mints, want 1", c.Minted())
	}
	for i := range certs {
		if certs[i] != certs[0] {
			t.Fatalf("caller %d got a different certificate", i)
		}
	}
	c.Leaf("b.test")
	c.Leaf("a.test") // a is now most recent
	c.Leaf("c.test") // evicts b
	if c.Minted() != 3 {
		t.Fatalf("mints %d, want 3", c.Minted())
	}
	c.Leaf("a.test")
	if c.Minted() != 3 {
		t.Errorf("a.test was evicted (mints %d)", c.Minted())
	}
	c.Leaf("b.test")
	if c.Minted() != 4 {
		t.Errorf("b.test was not evicted (mints %d)", c.Minted())
	}
	for i := range 10 {
		c.Leaf(fmt.Sprintf("n%d.test", i))
	}
	c.mu.Lock()
	n := c.lru.Len()
	c.mu.Unlock()
	if n > 2 {
		t.Errorf("cache holds %d leaves, bound 2", n)
	}
}
