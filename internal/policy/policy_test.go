package policy

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseForms(t *testing.T) {
	obj := `{"pii":{"enabled":true,"types":["email","ssn"],"action":"block"},"injection_defense":true,"audit":{"enabled":true,"log_request_body":true}}`
	quoted, _ := json.Marshal(obj)
	for name, raw := range map[string]string{
		"object":      obj,
		"policy_json": `{"policy_json":` + string(quoted) + `}`,
	} {
		t.Run(name, func(t *testing.T) {
			p, err := Parse(json.RawMessage(raw))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !p.PII.Enabled || p.PII.Action != "block" || len(p.PII.Types) != 2 || !p.PII.RehydrateResponse {
				t.Errorf("pii = %+v", p.PII)
			}
			if !p.InjectionDefense.Enabled || p.InjectionDefense.Action != "log_only" || p.InjectionDefense.Sensitivity != "medium" {
				t.Errorf("injection = %+v", p.InjectionDefense)
			}
			if !p.Audit.Enabled || !p.Audit.LogRequestBody || !p.RequiresTLSInterception() {
				t.Errorf("audit = %+v", p.Audit)
			}
		})
	}
	p, err := Parse(nil)
	if err != nil || !p.Audit.Enabled || p.PII.Enabled || p.RequiresTLSInterception() {
		t.Fatalf("Parse(nil) = %+v, %v", p, err)
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct{ raw, field string }{
		{`{"pii":{"types":["dna"]}}`, "pii.types"},
		{`{"pii":{"action":"shred"}}`, "pii.action"},
		{`{"injection_defense":{"sensitivity":"extreme"}}`, "injection_defense.sensitivity"},
		{`{"injection_defense":{"threshold":1.5}}`, "injection_defense.threshold"},
		{`{"injection_defense":{"domains":["bad domain"]}}`, "injection_defense.domains[0]"},
		{`{"transformations":[{"match":"(a+)+","replace":"x"}]}`, "transformations[0].match"},
		{`{"transformations":[{"match":"(","replace":"x"}]}`, "transformations[0].match"},
		{`{"transformations":[{"match":"a","direction":"sideways"}]}`, "transformations[0].direction"},
		{`{"audit":{"retention_hours":-1}}`, "audit.retention_hours"},
		{`{"policy_json":"not json"}`, "security.policy_json"},
		{`[1,2]`, "security"},
	} {
		_, err := Parse(json.RawMessage(tc.raw))
		var pe *Error
		if !errors.As(err, &pe) || pe.Field != tc.field {
			t.Errorf("Parse(%s) = %v, want an error on field %s", tc.raw, err, tc.field)
		}
	}
}

func TestValidateRegex(t *testing.T) {
	for re, ok := range map[string]bool{
		`\d{3}-\d{2}`: true, `(foo|bar)+`: true, `(a+)+`: false, `(a*)*b`: false, `(x{2,}){3,}`: false,
		`(ab){2}`: true, strings.Repeat("a", 1001): false, ``: false,
	} {
		err := ValidateRegex(re)
		if (err == nil) != ok {
			t.Errorf("ValidateRegex(%.20q) = %v, want ok=%v", re, err, ok)
		}
	}
	if !errors.Is(ValidateRegex(`(a+)+`), ErrNestedQuantifier) {
		t.Error("nested quantifier error is not ErrNestedQuantifier")
	}
}

func TestMaskEnv(t *testing.T) {
	p := Default()
	for name, want := range map[string]bool{"OPENAI_API_KEY": true, "db_password": true, "API_KEY": true, "HOME": false, "KEYRING": false} {
		if got := p.MaskEnv(name); got != want {
			t.Errorf("MaskEnv(%s) = %v, want %v", name, got, want)
		}
	}
}
