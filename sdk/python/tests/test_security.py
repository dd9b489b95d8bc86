import json
import os
import sys
import unittest
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from declaw import (  # noqa: E402
    ALL_TRAFFIC,
    PII_TYPES,
    AuditConfig,
    EnvSecurityConfig,
    InjectionDefenseConfig,
    NetworkPolicy,
    PIIConfig,
    SecureEnvVar,
    SecurityPolicy,
    TransformationRule,
)
from declaw.security import DEFAULT_MASK_PATTERNS  # noqa: E402


class DefaultsTest(unittest.TestCase):
    def test_defaults(self):
        p = SecurityPolicy()
        self.assertFalse(p.pii.enabled)
        self.assertEqual(p.pii.types, list(PII_TYPES))
        self.assertEqual(len(PII_TYPES), 8)
        self.assertEqual(p.pii.action, "redact")
        self.assertTrue(p.pii.rehydrate_response)
        self.assertIsNone(p.pii.domains)
        self.assertIs(p.injection_defense, False)
        self.assertEqual(p.transformations, [])
        self.assertIsNone(p.network)
        self.assertIs(p.audit, True)
        self.assertEqual(p.env_security.mask_patterns, list(DEFAULT_MASK_PATTERNS))
        self.assertTrue(p.env_security.auto_mask_in_audit)
        self.assertFalse(p.requires_tls_interception)
        i = InjectionDefenseConfig()
        self.assertEqual((i.enabled, i.action, i.sensitivity, i.threshold, i.domains), (False, "log_only", "medium", 0.95, None))
        a = AuditConfig()
        self.assertEqual((a.enabled, a.log_request_body, a.log_response_body, a.retention_hours), (True, False, False, None))
        n = NetworkPolicy()
        self.assertEqual((n.allow_out, n.deny_out, n.allow_public_traffic, n.mask_request_host), ([], [], True, None))
        self.assertEqual(TransformationRule(match="a").direction, "outbound")
        self.assertEqual(ALL_TRAFFIC, "0.0.0.0/0")

    def test_wire_dict(self):
        p = SecurityPolicy(
            pii=PIIConfig(enabled=True, types=["email"], action="block", domains=["*.openai.com"]),
            injection_defense=True,
            transformations=[TransformationRule(match=r"sk-\w+", replace="sk-***", direction="both")],
            network=NetworkPolicy(allow_out=["api.openai.com", "10.0.0.0/8"], deny_out=[ALL_TRAFFIC]),
            audit=False,
        )
        self.assertEqual(
            p.to_dict(),
            {
                "pii": {"enabled": True, "types": ["email"], "action": "block", "rehydrate_response": True,
                        "domains": ["*.openai.com"]},
                "injection_defense": {"enabled": True, "action": "log_only", "sensitivity": "medium",
                                      "threshold": 0.95, "domains": None},
                "transformations": [{"match": r"sk-\w+", "replace": "sk-***", "direction": "both"}],
                "network": {"allow_out": ["api.openai.com", "10.0.0.0/8"], "deny_out": ["0.0.0.0/0"],
                            "allow_public_traffic": True},
                "audit": {"enabled": False, "log_request_body": False, "log_response_body": False,
                          "retention_hours": None},
                "env_security": {"mask_patterns": list(DEFAULT_MASK_PATTERNS), "auto_mask_in_audit": True},
            },
        )
        self.assertEqual(json.loads(p.to_json()), p.to_dict())

    def test_round_trip(self):
        p = SecurityPolicy(
            pii=PIIConfig(enabled=True, types=["ssn", "phone"]),
            injection_defense=InjectionDefenseConfig(enabled=True, action="block", sensitivity="low", threshold=0.5,
                                                     domains=["api.example.com", "~^llm[0-9]+\\.corp$"]),
            transformations=[TransformationRule(match="(foo)bar", replace=r"\1baz", direction="inbound")],
            network=NetworkPolicy(allow_out=["*.example.com"], mask_request_host="x.internal"),
            audit=AuditConfig(retention_hours=24),
            env_security=EnvSecurityConfig(mask_patterns=["*_PAT"], auto_mask_in_audit=False),
        )
        again = SecurityPolicy.from_json(p.to_json())
        self.assertEqual(again.to_dict(), p.to_dict())
        for cls, obj in ((PIIConfig, p.pii), (InjectionDefenseConfig, p.injection_defense), (AuditConfig, p.audit),
                         (NetworkPolicy, p.network), (EnvSecurityConfig, p.env_security),
                         (TransformationRule, p.transformations[0])):
            self.assertEqual(cls.from_dict(obj.to_dict()), obj)

    def test_requires_tls_interception(self):
        self.assertTrue(SecurityPolicy(pii=PIIConfig(enabled=True)).requires_tls_interception)
        self.assertTrue(SecurityPolicy(injection_defense=True).requires_tls_interception)
        self.assertTrue(SecurityPolicy(injection_defense=InjectionDefenseConfig(enabled=True)).requires_tls_interception)
        self.assertTrue(SecurityPolicy(transformations=[TransformationRule(match="x")]).requires_tls_interception)
        self.assertFalse(SecurityPolicy(network=NetworkPolicy(allow_out=["a.com"]), audit=AuditConfig()).requires_tls_interception)
        self.assertFalse(SecurityPolicy(injection_defense=InjectionDefenseConfig(enabled=False)).requires_tls_interception)


class ValidationTest(unittest.TestCase):
    def assertInvalid(self, fn, *fragments):
        with self.assertRaises(ValueError) as cm:
            fn()
        for f in fragments:
            self.assertIn(f, str(cm.exception))

    def test_pii(self):
        self.assertInvalid(lambda: PIIConfig(types=["phone_number"]), "phone_number", "valid types")
        self.assertInvalid(lambda: PIIConfig(types="email"), "list")
        self.assertInvalid(lambda: PIIConfig(action="mask"), "PIIConfig.action")
        self.assertInvalid(lambda: PIIConfig(enabled="yes"), "enabled")
        self.assertInvalid(lambda: PIIConfig(domains=["not a domain"]), "domains")
        self.assertInvalid(lambda: PIIConfig.from_dict({"bogus": 1}), "bogus")
        for t in PII_TYPES:
            PIIConfig(types=[t])
        for a in ("redact", "block", "log_only"):
            PIIConfig(action=a)

    def test_injection(self):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            self.assertEqual(InjectionDefenseConfig(action="audit").action, "log_only")
        self.assertTrue(any(issubclass(x.category, DeprecationWarning) for x in w))
        self.assertInvalid(lambda: InjectionDefenseConfig(action="sanitize"), "action")
        self.assertInvalid(lambda: InjectionDefenseConfig(sensitivity="extreme"), "sensitivity")
        self.assertInvalid(lambda: InjectionDefenseConfig(threshold=1.5), "[0, 1]")
        self.assertInvalid(lambda: InjectionDefenseConfig(threshold=-0.1), "[0, 1]")
        self.assertInvalid(lambda: InjectionDefenseConfig(threshold="0.5"), "number")
        self.assertInvalid(lambda: InjectionDefenseConfig(threshold=True), "number")
        self.assertInvalid(lambda: InjectionDefenseConfig(domains=["~(unclosed"]), "regex")
        self.assertEqual(InjectionDefenseConfig(threshold=0).threshold, 0.0)
        self.assertEqual(InjectionDefenseConfig(threshold=1).threshold, 1.0)

    def test_transformation(self):
        self.assertInvalid(lambda: TransformationRule(match="(a+)+"), "nested quantifier")
        self.assertInvalid(lambda: TransformationRule(match="(x*)*y"), "nested quantifier")
        self.assertInvalid(lambda: TransformationRule(match="((ab)+c)*"), "nested quantifier")
        self.assertInvalid(lambda: TransformationRule(match="a" * 1001), "1000")
        self.assertInvalid(lambda: TransformationRule(match="(unclosed"), "invalid regex")
        self.assertInvalid(lambda: TransformationRule(match=""), "non-empty")
        self.assertInvalid(lambda: TransformationRule(match="a", direction="sideways"), "direction")
        TransformationRule(match="a" * 1000)
        TransformationRule(match=r"(\d{1,3}\.){3}\d{1,3}")
        TransformationRule(match=r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
        self.assertEqual(TransformationRule(match="a", direction="in").direction, "inbound")
        self.assertEqual(TransformationRule(match="a", direction="out").direction, "outbound")
        self.assertEqual(TransformationRule(match="(foo)bar", replace=r"\1!").apply("foobar"), "foo!")

    def test_network(self):
        NetworkPolicy(allow_out=["1.2.3.4", "10.0.0.0/8", "example.com", "*.example.com", "~^x\\.com$", "2001:db8::/32"],
                      deny_out=["0.0.0.0/0", "*", "::/0", "8.8.8.8"])
        self.assertInvalid(lambda: NetworkPolicy(deny_out=["example.com"]), "IP address or CIDR")
        self.assertInvalid(lambda: NetworkPolicy(allow_out=["bad domain!"]), "allow_out")
        self.assertInvalid(lambda: NetworkPolicy(allow_out="1.2.3.4"), "list")
        self.assertInvalid(lambda: NetworkPolicy(allow_public_traffic="no"), "allow_public_traffic")

    def test_audit(self):
        self.assertInvalid(lambda: AuditConfig(retention_hours=0), "retention_hours")
        self.assertInvalid(lambda: AuditConfig(retention_hours=1.5), "retention_hours")
        self.assertInvalid(lambda: AuditConfig(retention_hours=True), "retention_hours")
        self.assertEqual(AuditConfig(retention_hours=168).retention_hours, 168)

    def test_policy_types(self):
        self.assertInvalid(lambda: SecurityPolicy(pii="on"), "pii")
        self.assertInvalid(lambda: SecurityPolicy(injection_defense="yes"), "injection_defense")
        self.assertInvalid(lambda: SecurityPolicy(audit="yes"), "audit")
        self.assertInvalid(lambda: SecurityPolicy(transformations=["x"]), "TransformationRule")
        self.assertInvalid(lambda: SecurityPolicy.from_dict({"toxic": {}}), "toxic")

    def test_env_security(self):
        env = EnvSecurityConfig()
        for name in ("OPENAI_API_KEY", "aws_secret", "GITHUB_TOKEN", "DB_PASSWORD", "GCP_CREDENTIALS", "API_KEY", "SECRET_KEY"):
            self.assertTrue(env.should_mask(name), name)
        for name in ("PATH", "HOME", "KEYBOARD"):
            self.assertFalse(env.should_mask(name), name)
        v = SecureEnvVar("OPENAI_API_KEY", "sk-live-123")
        self.assertNotIn("sk-live", repr(v))
        self.assertNotIn("sk-live", str(v))
        self.assertIn("***", repr(v))
        self.assertEqual(v.value, "sk-live-123")
        self.assertEqual(SecureEnvVar.from_dict(v.to_dict()), v)




class UnscannableTest(unittest.TestCase):
    def test_sent_only_when_set(self):
        self.assertNotIn("unscannable", PIIConfig(enabled=True).to_dict())
        d = PIIConfig(enabled=True, unscannable="pass").to_dict()
        self.assertEqual(d["unscannable"], "pass")
        self.assertEqual(PIIConfig.from_dict(d).unscannable, "pass")

    def test_checked(self):
        with self.assertRaises(ValueError):
            PIIConfig(enabled=True, unscannable="maybe")


if __name__ == "__main__":
    unittest.main()
