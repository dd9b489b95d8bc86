// Package ca is a sandbox's own certificate authority for the egress
// proxy's TLS interception.
//
// New mints an ECDSA P-256 CA whose certificate (CertPEM) is the only part
// that goes into the sandbox (its trust store and SSL_CERT_FILE and friends);
// the private key stays in this process and is never serialised. Leaf
// mints, and caches in a bounded LRU, a certificate for one server name (a
// DNS SAN, or an IP SAN when the name is an IP literal), signed by the CA
// and presented to the sandbox in place of the upstream's. A CA is safe for
// concurrent use.
//
// # Installing the CA in a sandbox
//
// The server writes CertPEM to the sandbox's run directory on the host
// (e.g. <state>/run/<id>/ca.pem) and, before any user command runs, into
// the sandbox's root file system:
//
//   - /usr/local/share/ca-certificates/declaw.crt (the CA alone; also what
//     NODE_EXTRA_CA_CERTS points to, since Node adds it to its own roots);
//   - appended to a copy of the system bundle at
//     /etc/ssl/certs/ca-certificates.crt (the overlay is per sandbox), so
//     OpenSSL, curl, Go and Python's ssl trust it by default;
//
// and sets in every process's environment: SSL_CERT_FILE and
// REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE = /etc/ssl/certs/ca-certificates.crt
// (the combined bundle: spliced connections still present real
// certificates), NODE_EXTRA_CA_CERTS = /usr/local/share/ca-certificates/declaw.crt.
// Mint and install the CA for every sandbox, not only those whose policy
// needs interception now: a policy update can turn interception on later.
package ca

import (
	"container/list"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Defaults for the zero Options.
const (
	DefaultValidity  = 24 * time.Hour
	DefaultLeafCache = 1024
	// Backdate is how far before now certificates become valid, for clocks
	// inside the sandbox that run a little behind.
	Backdate = time.Hour
)

// Options tune a CA; the zero value uses the defaults.
type Options struct {
	// Validity is how long the CA (and every leaf) stays valid after now;
	// zero means DefaultValidity. Leaves never outlive the CA.
	Validity time.Duration
	// LeafCache bounds the cached leaves; zero means DefaultLeafCache.
	LeafCache int
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// CA is a per-sandbox certificate authority.
type CA struct {
	sandboxID string
	cert      *x509.Certificate
	key       *ecdsa.PrivateKey
	certPEM   []byte
	notAfter  time.Time
	opts      Options

	mu    sync.Mutex
	lru   *list.List               // +checklocks:mu; of *leafEntry, most recent first
	byKey map[string]*list.Element // +checklocks:mu
	mints int                      // +checklocks:mu; leaves minted (cache misses)
}

type leafEntry struct {
	name string
	cert *tls.Certificate
	once sync.Once
	err  error
}

// New mints a CA for the sandbox with the default options.
func New(sandboxID string) (*CA, error) { return NewWithOptions(sandboxID, Options{}) }

// NewWithOptions mints a CA for the sandbox.
func NewWithOptions(sandboxID string, opts Options) (*CA, error) {
	if opts.Validity <= 0 {
		opts.Validity = DefaultValidity
	}
	if opts.LeafCache <= 0 {
		opts.LeafCache = DefaultLeafCache
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: generate key for sandbox %s: %w", sandboxID, err)
	}
	now := opts.Now()
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("ca: marshal key: %w", err)
	}
	ski := sha256.Sum256(pub)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Declaw CA - " + sandboxID, Organization: []string{"Declaw"}},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(opts.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          ski[:20],
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("ca: create certificate for sandbox %s: %w", sandboxID, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse certificate: %w", err)
	}
	return &CA{
		sandboxID: sandboxID,
		cert:      cert,
		key:       key,
		certPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		notAfter:  tmpl.NotAfter,
		opts:      opts,
		lru:       list.New(),
		byKey:     map[string]*list.Element{},
	}, nil
}

// CertPEM returns the CA certificate, PEM-encoded: what the sandbox trusts.
func (c *CA) CertPEM() []byte { return append([]byte(nil), c.certPEM...) }

// Certificate returns the parsed CA certificate.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// SandboxID returns the sandbox the CA was minted for.
func (c *CA) SandboxID() string { return c.sandboxID }

// Pool returns a pool holding only the CA certificate (for tests and
// clients that trust the sandbox's CA).
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.cert)
	return p
}

// Minted reports how many leaves were minted (cache misses); for tests and
// metrics.
func (c *CA) Minted() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mints
}

// ErrBadName is returned by Leaf for names that cannot go into a certificate.
var ErrBadName = errors.New("ca: invalid server name")

// Leaf returns a certificate for name (a DNS name or an IP literal), minting
// it on first use and caching it. Concurrent callers for the same name share
// one mint.
func (c *CA) Leaf(name string) (*tls.Certificate, error) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if name == "" || len(name) > 253 || strings.ContainsAny(name, " /\\\x00") {
		return nil, fmt.Errorf("%w: %q", ErrBadName, name)
	}
	c.mu.Lock()
	el, ok := c.byKey[name]
	if ok {
		c.lru.MoveToFront(el)
	} else {
		el = c.lru.PushFront(&leafEntry{name: name})
		c.byKey[name] = el
		for c.lru.Len() > c.opts.LeafCache {
			old := c.lru.Back()
			c.lru.Remove(old)
			delete(c.byKey, old.Value.(*leafEntry).name)
		}
	}
	e := el.Value.(*leafEntry)
	c.mu.Unlock()
	e.once.Do(func() {
		e.cert, e.err = c.mint(name)
		c.mu.Lock()
		c.mints++
		if e.err != nil {
			if cur, ok := c.byKey[name]; ok && cur == el {
				c.lru.Remove(el)
				delete(c.byKey, name)
			}
		}
		c.mu.Unlock()
	})
	if e.err == nil && c.opts.Now().After(e.cert.Leaf.NotAfter) {
		// Expired in the cache (the CA itself has expired too, since
		// leaves end with it): report it rather than serving it.
		return nil, fmt.Errorf("ca: certificate for %q expired at %v", name, e.cert.Leaf.NotAfter)
	}
	return e.cert, e.err
}

func (c *CA) mint(name string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: generate leaf key: %w", err)
	}
	now := c.opts.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              c.notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		AuthorityKeyId:        c.cert.SubjectKeyId,
	}
	if a, err := netip.ParseAddr(name); err == nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
	} else {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign leaf for %q: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse leaf: %w", err)
	}
	return &tls.Certificate{
		Certificate: [][]byte{der, c.cert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic("ca: crypto/rand failed: " + err.Error()) // crypto/rand does not fail on Linux
	}
	return n.Add(n, big.NewInt(1))
}
