package envd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/declaw/declaw/internal/envdapi"
)

func testCAPEM(t *testing.T) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Declaw CA - test"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestInstallCA(t *testing.T) {
	root := t.TempDir()
	bundle := filepath.Join(root, envdapi.SystemCABundle)
	os.MkdirAll(filepath.Dir(bundle), 0o755)
	os.WriteFile(bundle, []byte("-----BEGIN CERTIFICATE-----\nsystem\n-----END CERTIFICATE-----"), 0o644)
	ca := testCAPEM(t)
	for i := 0; i < 2; i++ { // idempotent
		if err := installCA(root, ca); err != nil {
			t.Fatalf("installCA #%d: %v", i, err)
		}
	}
	b, _ := os.ReadFile(bundle)
	if !strings.HasPrefix(string(b), "-----BEGIN CERTIFICATE-----\nsystem") || strings.Count(string(b), ca) != 1 {
		t.Fatalf("bundle after two installs:\n%s", b)
	}
	pool := x509.NewCertPool()
	if got, _ := os.ReadFile(filepath.Join(root, envdapi.CACertPath)); !pool.AppendCertsFromPEM(got) {
		t.Fatalf("CA file %q does not hold the certificate", got)
	}
	for _, bad := range []string{"", "not pem", ca + ca, strings.Replace(ca, "CERTIFICATE", "PRIVATE KEY", -1)} {
		if err := installCA(root, bad); !errors.Is(err, errBadInput) {
			t.Errorf("installCA(%.20q) = %v, want a bad-input error", bad, err)
		}
	}
}
