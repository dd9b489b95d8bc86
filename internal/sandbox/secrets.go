package sandbox

import (
	"bytes"
	"sort"
	"strings"
	"time"

	"github.com/declaw/declaw/internal/policy"
)

// secretValues are the values of a sandbox's env vars whose names match its
// policy's env_security.mask_patterns (with auto_mask_in_audit on), longest
// first so a secret that contains another is masked whole.
func secretValues(sec *policy.Security, envs map[string]string) [][]byte {
	if !sec.EnvSecurity.AutoMaskInAudit {
		return nil
	}
	var out [][]byte
	for k, v := range envs {
		if len(v) >= 4 && sec.MaskEnv(k) {
			out = append(out, []byte(v))
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// rememberSecrets keeps a sandbox's secret values for MaskSecrets; they are
// forgotten a while after the sandbox is killed (events may still arrive).
func (m *Manager) rememberSecrets(id string, vals [][]byte) {
	if len(vals) == 0 {
		return
	}
	m.secretsMu.Lock()
	defer m.secretsMu.Unlock()
	if m.secrets == nil {
		m.secrets = map[string][][]byte{}
	}
	m.secrets[id] = vals
	m.secretsGen++
	m.secretsSet[id] = m.secretsGen
}

// forgetSecrets forgets a killed sandbox's secrets and audit switch a
// minute later, unless a restore of the sandbox has set them again.
func (m *Manager) forgetSecrets(id string) {
	m.secretsMu.Lock()
	gen := m.secretsSet[id]
	m.secretsMu.Unlock()
	time.AfterFunc(time.Minute, func() {
		m.secretsMu.Lock()
		defer m.secretsMu.Unlock()
		if m.secretsSet[id] != gen {
			return
		}
		delete(m.secrets, id)
		delete(m.auditOff, id)
		delete(m.secretsSet, id)
	})
}

// auditGated are the event categories a policy with audit.enabled=false
// turns off; lifecycle events (sandbox.*) are always recorded.
var auditGated = []string{"dns.", "egress.", "network.", "http.", "command.", "file."}

// setAuditOff records that a sandbox's policy turned its audit off.
func (m *Manager) setAuditOff(id string) {
	m.secretsMu.Lock()
	defer m.secretsMu.Unlock()
	if m.auditOff == nil {
		m.auditOff = map[string]bool{}
	}
	m.auditOff[id] = true
	m.secretsGen++
	m.secretsSet[id] = m.secretsGen
}

// auditDropped reports whether an event of typ for sandbox id is gated off.
func (m *Manager) auditDropped(id, typ string) bool {
	m.secretsMu.Lock()
	off := m.auditOff[id]
	m.secretsMu.Unlock()
	if !off {
		return false
	}
	for _, p := range auditGated {
		if strings.HasPrefix(typ, p) {
			return true
		}
	}
	return false
}

// MaskSecrets replaces, in b, every value of the sandbox's masked env vars
// with "***", so they never reach the audit store in clear. The sandbox
// itself still gets the real values.
func (m *Manager) MaskSecrets(id string, b []byte) []byte {
	m.secretsMu.Lock()
	vals := m.secrets[id]
	m.secretsMu.Unlock()
	for _, v := range vals {
		if bytes.Contains(b, v) {
			b = bytes.ReplaceAll(b, v, []byte("***"))
		}
	}
	return b
}
