"""Security policy models sent with ``Sandbox.create(security=...)``.

Every model validates itself on construction (raising ``ValueError`` with a
clear message) and has ``to_dict()`` / ``from_dict()``. The create request
carries the policy as ``{"security": {"policy_json": SecurityPolicy.to_json()}}``.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

__all__ = [
    "ALL_TRAFFIC",
    "PII_TYPES",
    "DEFAULT_MASK_PATTERNS",
    "PIIConfig",
    "InjectionDefenseConfig",
    "TransformationRule",
    "NetworkPolicy",
    "AuditConfig",
    "EnvSecurityConfig",
    "SecureEnvVar",
    "SecurityPolicy",
]

#: Every IPv4 address: ``deny_out=[ALL_TRAFFIC]`` blocks all egress.
ALL_TRAFFIC = "0.0.0.0/0"

PII_TYPES = (
    "ssn",
    "credit_card",
    "email",
    "phone",
    "person_name",
    "api_key",
    "address",
    "ip_address",
)

DEFAULT_MASK_PATTERNS = (
    "*_KEY",
    "*_SECRET",
    "*_TOKEN",
    "*_PASSWORD",
    "*_CREDENTIALS",
    "API_KEY",
    "SECRET_KEY",
)

MAX_REGEX_LENGTH = 1000

_PII_ACTIONS = ("redact", "block", "log_only")
_INJECTION_ACTIONS = ("log_only", "block")
_SENSITIVITIES = ("low", "medium", "high")
_DIRECTIONS = ("outbound", "inbound", "both")
_DIRECTION_ALIASES = {"out": "outbound", "in": "inbound", "egress": "outbound", "ingress": "inbound"}


# ---------------------------------------------------------------- helpers


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return value


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value


def _check_str_list(name: str, value: Any, allow_none: bool = True) -> Optional[List[str]]:
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} must be a list of strings")
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise ValueError(f"{name} must be a list of strings, got {value!r}")
    out = list(value)
    for v in out:
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"{name} entries must be non-empty strings, got {v!r}")
    return out


_DOMAIN_RE = re.compile(
    r"^(\*\.)?([A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$"
)


def _check_domain_pattern(name: str, entry: str) -> None:
    """Domain patterns: exact, ``*.example.com`` or ``~regex``."""
    if entry.startswith("~"):
        _compile_regex(f"{name} entry {entry!r}", entry[1:])
        return
    if entry == "*":
        return
    if not _DOMAIN_RE.match(entry) or len(entry) > 253:
        raise ValueError(f"{name} entry {entry!r} is not a domain, '*.domain' or '~regex'")


def _check_domains(name: str, value: Any) -> Optional[List[str]]:
    out = _check_str_list(name, value)
    for d in out or []:
        _check_domain_pattern(name, d)
    return out


def _is_ip_or_cidr(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry, strict=False)
        return True
    except ValueError:
        return False


def _compile_regex(what: str, pattern: str) -> "re.Pattern[str]":
    if len(pattern) > MAX_REGEX_LENGTH:
        raise ValueError(f"{what}: regex is {len(pattern)} characters, the limit is {MAX_REGEX_LENGTH}")
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"{what}: invalid regex: {e}") from None
    if _has_nested_quantifier(pattern):
        raise ValueError(
            f"{what}: nested quantifiers such as (a+)+ are not allowed (catastrophic backtracking)"
        )
    return compiled


def _sre_parser() -> Any:
    try:
        from re import _parser as parser  # type: ignore[attr-defined]  # Python >= 3.11
    except ImportError:  # pragma: no cover - Python < 3.11
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import sre_parse as parser  # type: ignore[no-redef]
    return parser


def _has_nested_quantifier(pattern: str) -> bool:
    """True if an unbounded repeat contains another unbounded repeat, e.g.
    ``(a+)+``, ``(a*)*``, ``(?:x+y?)*``: the classic ReDoS shapes."""
    parser = _sre_parser()
    consts = parser  # the opcode constants are re-exported by the parser module
    repeats = {consts.MAX_REPEAT, consts.MIN_REPEAT}
    poss = getattr(consts, "POSSESSIVE_REPEAT", None)
    if poss is not None:
        repeats.add(poss)
    maxrepeat = consts.MAXREPEAT

    def walk(items: Any, inside_unbounded: bool) -> bool:
        for op, av in items:
            if op in repeats:
                lo, hi, sub = av
                unbounded = hi == maxrepeat or hi > 100
                if unbounded and inside_unbounded:
                    return True
                if walk(sub, inside_unbounded or unbounded):
                    return True
            elif op == consts.SUBPATTERN:
                if walk(av[-1], inside_unbounded):
                    return True
            elif op == consts.BRANCH:
                for alt in av[1]:
                    if walk(alt, inside_unbounded):
                        return True
            elif op in (consts.ASSERT, consts.ASSERT_NOT):
                if walk(av[1], inside_unbounded):
                    return True
            elif getattr(consts, "ATOMIC_GROUP", None) is not None and op == consts.ATOMIC_GROUP:
                if walk(av, inside_unbounded):
                    return True
        return False

    try:
        return walk(parser.parse(pattern), False)
    except Exception:  # the parser is private API; never fail validation on it
        return False


def _from_dict_check(cls_name: str, data: Any, allowed: Sequence[str]) -> Dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{cls_name}.from_dict expects a dict, got {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(f"{cls_name}: unknown field(s) {', '.join(unknown)}")
    return dict(data)


# ----------------------------------------------------------------- models


@dataclass
class PIIConfig:
    """PII detection on HTTP(S) egress.

    Args:
        enabled: turn detection on.
        types: PII kinds to detect; defaults to all of ``PII_TYPES``.
        action: ``"redact"`` (replace with placeholders), ``"block"`` (answer
            403) or ``"log_only"``.
        rehydrate_response: put the original values back into responses.
        domains: only scan traffic to these domains (None = all egress).
        unscannable: what the proxy does with a request body it cannot decode
            or parse: ``"block"`` (the server's default) or ``"pass"`` (sent
            on with an audit note). A Declaw extension, sent only when set.
    """

    enabled: bool = False
    types: List[str] = field(default_factory=lambda: list(PII_TYPES))
    action: str = "redact"
    rehydrate_response: bool = True
    domains: Optional[List[str]] = None
    unscannable: Optional[str] = None

    def __post_init__(self) -> None:
        _check_bool("PIIConfig.enabled", self.enabled)
        types = _check_str_list("PIIConfig.types", self.types, allow_none=False) or []
        bad = [t for t in types if t not in PII_TYPES]
        if bad:
            raise ValueError(
                f"PIIConfig.types: unknown PII type(s) {', '.join(map(repr, bad))}; "
                f"valid types are {', '.join(PII_TYPES)}"
            )
        self.types = list(dict.fromkeys(types))
        _check_choice("PIIConfig.action", self.action, _PII_ACTIONS)
        _check_bool("PIIConfig.rehydrate_response", self.rehydrate_response)
        self.domains = _check_domains("PIIConfig.domains", self.domains)
        if self.unscannable is not None:
            _check_choice("PIIConfig.unscannable", self.unscannable, ("block", "pass"))

    def to_dict(self) -> Dict[str, Any]:
        d = {
            "enabled": self.enabled,
            "types": list(self.types),
            "action": self.action,
            "rehydrate_response": self.rehydrate_response,
            "domains": list(self.domains) if self.domains is not None else None,
        }
        if self.unscannable is not None:
            d["unscannable"] = self.unscannable
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PIIConfig":
        d = _from_dict_check("PIIConfig", data, ("enabled", "types", "action", "rehydrate_response", "domains", "unscannable"))
        if d.get("types") is None:
            d.pop("types", None)
        return cls(**d)


@dataclass
class InjectionDefenseConfig:
    """Prompt-injection scanning of HTTP(S) traffic.

    Args:
        enabled: turn scanning on.
        action: ``"log_only"`` or ``"block"`` (``"audit"`` is accepted as a
            deprecated alias of ``"log_only"``).
        sensitivity: ``"low"``, ``"medium"`` or ``"high"``.
        threshold: score in [0, 1] above which a payload is flagged.
        domains: domains to scan (exact, ``*.x`` or ``~regex``). Opt-in:
            None or empty means no domain is scanned.
    """

    enabled: bool = False
    action: str = "log_only"
    sensitivity: str = "medium"
    threshold: float = 0.95
    domains: Optional[List[str]] = None

    def __post_init__(self) -> None:
        _check_bool("InjectionDefenseConfig.enabled", self.enabled)
        if self.action == "audit":
            warnings.warn(
                "InjectionDefenseConfig action 'audit' is deprecated; use 'log_only'",
                DeprecationWarning,
                stacklevel=3,
            )
            self.action = "log_only"
        _check_choice("InjectionDefenseConfig.action", self.action, _INJECTION_ACTIONS)
        _check_choice("InjectionDefenseConfig.sensitivity", self.sensitivity, _SENSITIVITIES)
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise ValueError(f"InjectionDefenseConfig.threshold must be a number, got {self.threshold!r}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"InjectionDefenseConfig.threshold must be in [0, 1], got {self.threshold!r}")
        self.threshold = float(self.threshold)
        self.domains = _check_domains("InjectionDefenseConfig.domains", self.domains)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "enabled": self.enabled,
            "action": self.action,
            "sensitivity": self.sensitivity,
            "threshold": self.threshold,
            "domains": list(self.domains) if self.domains is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "InjectionDefenseConfig":
        d = _from_dict_check(
            "InjectionDefenseConfig", data, ("enabled", "action", "sensitivity", "threshold", "domains")
        )
        return cls(**d)


@dataclass
class TransformationRule:
    """A regex rewrite applied to HTTP bodies, in list order.

    Args:
        match: Python/RE2-compatible regex (at most 1000 characters, no
            nested quantifiers).
        replace: replacement text; ``\\1`` refers to groups.
        direction: ``"outbound"`` (requests), ``"inbound"`` (responses) or
            ``"both"``.
    """

    match: str
    replace: str = ""
    direction: str = "outbound"

    def __post_init__(self) -> None:
        if not isinstance(self.match, str) or not self.match:
            raise ValueError("TransformationRule.match must be a non-empty regex string")
        if not isinstance(self.replace, str):
            raise ValueError(f"TransformationRule.replace must be a string, got {self.replace!r}")
        if isinstance(self.direction, str):
            self.direction = _DIRECTION_ALIASES.get(self.direction, self.direction)
        _check_choice("TransformationRule.direction", self.direction, _DIRECTIONS)
        _compile_regex("TransformationRule.match", self.match)

    def apply(self, text: str) -> str:
        """Apply the rule to ``text`` locally (as the proxy would)."""
        return re.sub(self.match, self.replace, text)

    def to_dict(self) -> Dict[str, Any]:
        return {"match": self.match, "replace": self.replace, "direction": self.direction}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TransformationRule":
        d = _from_dict_check("TransformationRule", data, ("match", "replace", "direction"))
        return cls(**d)


@dataclass
class NetworkPolicy:
    """Egress rules of a sandbox. Allow beats deny.

    Args:
        allow_out: IPs, CIDRs or domains (``example.com``, ``*.example.com``,
            ``~regex``) that may be reached.
        deny_out: IPs or CIDRs that are dropped (``ALL_TRAFFIC`` or ``"*"``
            for everything).
        allow_public_traffic: allow inbound traffic through the port proxy.
        mask_request_host: value that overrides the Host header of proxied
            inbound requests.
    """

    allow_out: List[str] = field(default_factory=list)
    deny_out: List[str] = field(default_factory=list)
    allow_public_traffic: bool = True
    mask_request_host: Optional[str] = None

    def __post_init__(self) -> None:
        self.allow_out = _check_str_list("NetworkPolicy.allow_out", self.allow_out or [], allow_none=False) or []
        self.deny_out = _check_str_list("NetworkPolicy.deny_out", self.deny_out or [], allow_none=False) or []
        for entry in self.allow_out:
            if entry != "*" and not _is_ip_or_cidr(entry):
                _check_domain_pattern("NetworkPolicy.allow_out", entry)
        for entry in self.deny_out:
            if entry != "*" and not _is_ip_or_cidr(entry):
                raise ValueError(
                    f"NetworkPolicy.deny_out entry {entry!r} must be an IP address or CIDR "
                    f"(use allow_out for domain rules)"
                )
        _check_bool("NetworkPolicy.allow_public_traffic", self.allow_public_traffic)
        if self.mask_request_host is not None and (
            not isinstance(self.mask_request_host, str) or not self.mask_request_host
        ):
            raise ValueError("NetworkPolicy.mask_request_host must be a non-empty string or None")

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {
            "allow_out": list(self.allow_out),
            "deny_out": list(self.deny_out),
            "allow_public_traffic": self.allow_public_traffic,
        }
        if self.mask_request_host is not None:
            d["mask_request_host"] = self.mask_request_host
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NetworkPolicy":
        d = _from_dict_check(
            "NetworkPolicy", data, ("allow_out", "deny_out", "allow_public_traffic", "mask_request_host")
        )
        return cls(**{k: v for k, v in d.items() if v is not None or k == "mask_request_host"})


@dataclass
class AuditConfig:
    """Audit logging of the sandbox's activity.

    Args:
        enabled: record audit events (default on).
        log_request_body: keep HTTP request bodies in egress events.
        log_response_body: keep HTTP response bodies in egress events.
        retention_hours: how long to keep events (None = platform default).
    """

    enabled: bool = True
    log_request_body: bool = False
    log_response_body: bool = False
    retention_hours: Optional[int] = None

    def __post_init__(self) -> None:
        _check_bool("AuditConfig.enabled", self.enabled)
        _check_bool("AuditConfig.log_request_body", self.log_request_body)
        _check_bool("AuditConfig.log_response_body", self.log_response_body)
        if self.retention_hours is not None and (
            isinstance(self.retention_hours, bool)
            or not isinstance(self.retention_hours, int)
            or self.retention_hours <= 0
        ):
            raise ValueError(
                f"AuditConfig.retention_hours must be a positive integer or None, got {self.retention_hours!r}"
            )

    def to_dict(self) -> Dict[str, Any]:
        return {
            "enabled": self.enabled,
            "log_request_body": self.log_request_body,
            "log_response_body": self.log_response_body,
            "retention_hours": self.retention_hours,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AuditConfig":
        d = _from_dict_check(
            "AuditConfig", data, ("enabled", "log_request_body", "log_response_body", "retention_hours")
        )
        return cls(**d)


@dataclass
class EnvSecurityConfig:
    """Which environment variables count as secrets (masked in audit logs).

    ``mask_patterns`` are fnmatch patterns matched against the upper-cased
    variable name.
    """

    mask_patterns: List[str] = field(default_factory=lambda: list(DEFAULT_MASK_PATTERNS))
    auto_mask_in_audit: bool = True

    def __post_init__(self) -> None:
        self.mask_patterns = _check_str_list("EnvSecurityConfig.mask_patterns", self.mask_patterns, allow_none=False) or []
        _check_bool("EnvSecurityConfig.auto_mask_in_audit", self.auto_mask_in_audit)

    def should_mask(self, name: str) -> bool:
        upper = name.upper()
        return any(fnmatch.fnmatchcase(upper, p.upper()) for p in self.mask_patterns)

    def to_dict(self) -> Dict[str, Any]:
        return {"mask_patterns": list(self.mask_patterns), "auto_mask_in_audit": self.auto_mask_in_audit}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EnvSecurityConfig":
        d = _from_dict_check("EnvSecurityConfig", data, ("mask_patterns", "auto_mask_in_audit"))
        return cls(**d)


class SecureEnvVar:
    """An environment variable whose value never shows in repr/str/logs.

    Pass it as a value in ``envs={...}``; the real value is sent to the
    server, which masks it in audit records.
    """

    __slots__ = ("key", "value", "secret")

    def __init__(self, key: str, value: str, secret: bool = True) -> None:
        if not isinstance(key, str) or not key:
            raise ValueError("SecureEnvVar.key must be a non-empty string")
        if not isinstance(value, str):
            raise ValueError("SecureEnvVar.value must be a string")
        self.key, self.value, self.secret = key, value, bool(secret)

    def __repr__(self) -> str:
        shown = "***" if self.secret else repr(self.value)
        return f"SecureEnvVar(key={self.key!r}, value={shown})"

    def __str__(self) -> str:
        return "***" if self.secret else self.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecureEnvVar) and (self.key, self.value, self.secret) == (
            other.key,
            other.value,
            other.secret,
        )

    def __hash__(self) -> int:
        return hash((self.key, self.value, self.secret))

    def to_dict(self) -> Dict[str, Any]:
        return {"key": self.key, "value": self.value, "secret": self.secret}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SecureEnvVar":
        d = _from_dict_check("SecureEnvVar", data, ("key", "value", "secret"))
        return cls(**d)


@dataclass
class SecurityPolicy:
    """The whole security configuration of a sandbox.

    Args:
        pii: PII detection (off by default).
        injection_defense: ``True``/``False`` or an ``InjectionDefenseConfig``.
        transformations: ordered ``TransformationRule`` list.
        network: egress rules; copied to the create request's ``network``
            when that is not given.
        audit: ``True``/``False`` or an ``AuditConfig`` (on by default).
        env_security: secret-masking patterns for env vars.
    """

    pii: PIIConfig = field(default_factory=PIIConfig)
    injection_defense: Union[bool, InjectionDefenseConfig] = False
    transformations: List[TransformationRule] = field(default_factory=list)
    network: Optional[NetworkPolicy] = None
    audit: Union[bool, AuditConfig] = True
    env_security: EnvSecurityConfig = field(default_factory=EnvSecurityConfig)

    def __post_init__(self) -> None:
        if self.pii is None:
            self.pii = PIIConfig()
        elif isinstance(self.pii, Mapping):
            self.pii = PIIConfig.from_dict(self.pii)
        elif not isinstance(self.pii, PIIConfig):
            raise ValueError(f"SecurityPolicy.pii must be a PIIConfig, got {type(self.pii).__name__}")

        inj = self.injection_defense
        if isinstance(inj, Mapping):
            self.injection_defense = InjectionDefenseConfig.from_dict(inj)
        elif inj is None:
            self.injection_defense = False
        elif not isinstance(inj, (bool, InjectionDefenseConfig)):
            raise ValueError("SecurityPolicy.injection_defense must be a bool or an InjectionDefenseConfig")

        rules = self.transformations if self.transformations is not None else []
        if isinstance(rules, (str, bytes, Mapping)) or not isinstance(rules, (list, tuple)):
            raise ValueError("SecurityPolicy.transformations must be a list of TransformationRule")
        converted = []
        for r in rules:
            if isinstance(r, Mapping):
                r = TransformationRule.from_dict(r)
            if not isinstance(r, TransformationRule):
                raise ValueError(f"SecurityPolicy.transformations entries must be TransformationRule, got {r!r}")
            converted.append(r)
        self.transformations = converted

        if isinstance(self.network, Mapping):
            self.network = NetworkPolicy.from_dict(self.network)
        elif self.network is not None and not isinstance(self.network, NetworkPolicy):
            raise ValueError("SecurityPolicy.network must be a NetworkPolicy or None")

        audit = self.audit
        if isinstance(audit, Mapping):
            self.audit = AuditConfig.from_dict(audit)
        elif audit is None:
            self.audit = True
        elif not isinstance(audit, (bool, AuditConfig)):
            raise ValueError("SecurityPolicy.audit must be a bool or an AuditConfig")

        if self.env_security is None:
            self.env_security = EnvSecurityConfig()
        elif isinstance(self.env_security, Mapping):
            self.env_security = EnvSecurityConfig.from_dict(self.env_security)
        elif not isinstance(self.env_security, EnvSecurityConfig):
            raise ValueError("SecurityPolicy.env_security must be an EnvSecurityConfig")

    # Normalised views ------------------------------------------------
    @property
    def injection_config(self) -> InjectionDefenseConfig:
        inj = self.injection_defense
        if isinstance(inj, InjectionDefenseConfig):
            return inj
        return InjectionDefenseConfig(enabled=bool(inj))

    @property
    def audit_config(self) -> AuditConfig:
        a = self.audit
        if isinstance(a, AuditConfig):
            return a
        return AuditConfig(enabled=bool(a))

    @property
    def requires_tls_interception(self) -> bool:
        """True when a content scanner needs to see decrypted traffic
        (PII, injection defense or transformations); otherwise the proxy
        only filters by SNI/Host without decrypting."""
        return bool(self.pii.enabled or self.injection_config.enabled or self.transformations)

    def to_dict(self) -> Dict[str, Any]:
        """The wire form: every section as an object (bools are expanded)."""
        return {
            "pii": self.pii.to_dict(),
            "injection_defense": self.injection_config.to_dict(),
            "transformations": [t.to_dict() for t in self.transformations],
            "network": self.network.to_dict() if self.network is not None else None,
            "audit": self.audit_config.to_dict(),
            "env_security": self.env_security.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SecurityPolicy":
        d = _from_dict_check(
            "SecurityPolicy",
            data,
            (
                "pii",
                "injection_defense",
                "transformations",
                "network",
                "audit",
                "env_security",
            ),
        )
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "SecurityPolicy":
        return cls.from_dict(json.loads(text))
