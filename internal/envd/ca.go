package envd

import (
	"bytes"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"

	"github.com/declaw/declaw/internal/envdapi"
)

// installCA writes the sandbox CA under root and appends it to the system
// bundle, unless the bundle already holds it (init may be sent again).
func installCA(root, certPEM string) error {
	block, rest := pem.Decode([]byte(certPEM))
	if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) > 0 {
		return badInput("ca_cert must be one PEM certificate")
	}
	clean := pem.EncodeToMemory(block)
	caPath := filepath.Join(root, envdapi.CACertPath)
	if err := os.MkdirAll(filepath.Dir(caPath), 0o755); err != nil {
		return fmt.Errorf("install CA: %w", err)
	}
	if err := os.WriteFile(caPath, clean, 0o644); err != nil {
		return fmt.Errorf("install CA: %w", err)
	}
	bundle := filepath.Join(root, envdapi.SystemCABundle)
	old, err := os.ReadFile(bundle)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("install CA: read bundle: %w", err)
	}
	if bytes.Contains(old, clean) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(bundle), 0o755); err != nil {
		return fmt.Errorf("install CA: %w", err)
	}
	var b bytes.Buffer
	b.Write(old)
	if len(old) > 0 && old[len(old)-1] != '\n' {
		b.WriteByte('\n')
	}
	b.WriteString("# Declaw sandbox CA\n")
	b.Write(clean)
	tmp := bundle + ".declaw-tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("install CA: %w", err)
	}
	if err := os.Rename(tmp, bundle); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("install CA: %w", err)
	}
	return nil
}
