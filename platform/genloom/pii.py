"""PII detection and redaction: a small, documented set of pattern recognizers.

Why not Presidio: its analyzer needs a spaCy language model (a download) even when only its
pattern recognizers are wanted; genloom must run offline. These recognizers are regular
expressions with a validating check where the format has one, which is what Presidio's own
pattern recognizers do for these types:

| type        | pattern                                             | check                            |
|-------------|-----------------------------------------------------|----------------------------------|
| secret      | sk-…, ghp_/gho_/…/github_pat_…, AKIA/ASIA…, xox?-…, | issuers' prefixes and lengths    |
|             | aws_secret_access_key=…, PEM private-key headers    |                                  |
| email       | local@domain.tld                                    | -                                |
| iban        | 2 letters, 2 digits, 11–30 letters/digits (spaces)  | ISO 13616 mod-97 = 1             |
| card        | 13–19 digits, optional single spaces or dashes      | Luhn                             |
| national_id | US SSN (AAA-GG-SSSS), UK NINO (AB 12 34 56 C)       | SSA/HMRC reserved ranges refused |
| ip          | IPv4 dotted quad, IPv6                              | Python's ipaddress parses it     |
| phone       | +CC …, (AAA) BBB-CCCC, AAA-BBB-CCCC, 0AA BBBB CCCC  | 9–15 digits, separators required |

Recognizers run in that order and a later one never claims text an earlier one matched
(a card number is not also a phone number). Measured recall and precision per type on a
planted corpus: bench/pii_planted.py, docs/benchmarks.md.

Modes: `mask` replaces a value by `<EMAIL>`; `hash` by `<EMAIL:1a2b3c4d5e6f>`, an HMAC-SHA256
under a per-install secret (so equal values stay joinable but a dictionary of likely emails
cannot reverse them); `encrypt` by `<EMAIL:gle1:…>` (genloom.crypto; reversible with the key).
Findings keep the type and character span in the original text, never the value.
Identifiers (user ids, feedback labels) are stored as `pseudonym`s under every mode but off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from typing import Any

from genloom.errors import BadInput

MODES = ("off", "mask", "hash", "encrypt")
TYPES = ("email", "iban", "card", "national_id", "ip", "phone")
PII_ENV = "GENLOOM_PII"  # the server's default for the prompt/answer log


@dataclasses.dataclass(frozen=True)
class Finding:
    type: str
    start: int
    end: int


_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_SSN = re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")
_NINO = re.compile(r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
_IPV4 = re.compile(r"(?<!\d\.)(?<!\d)(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)")  # a sentence's full stop may follow
_IPV6 = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{3,39}(?![\w:])")  # ipaddress decides
_PHONE = re.compile(
    r"(?<![\w+])(?<!\d[ .-])(?:"  # not the tail of a longer digit-group run (an IBAN, a card)
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,5}(?:[ .-]\d{2,5}){1,4}"  # +44 20 7946 0958, +1 (415) 555-0132
    r"|\(\d{3}\) ?\d{3}[ .-]\d{4}"  # (415) 555-0132
    r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 415-555-0132, 415.555.0132
    r"|0\d{2,4} \d{3,4} \d{3,4}"  # 020 7946 0958, 030 1234 5678
    r")(?![\w-])(?![ .-]\d)"
)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(text: str) -> bool:
    s = text.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _ip_ok(text: str) -> bool:
    if not any(c.isdigit() for c in text):  # 'a::b' parses as IPv6 but is C++ or prose
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _card_ok(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return 13 <= len(digits) <= 19 and _luhn(digits) and len(set(digits)) > 1


def _phone_ok(text: str) -> bool:
    return 9 <= sum(c.isdigit() for c in text) <= 15


# Credentials that look like API keys, by their issuers' published prefixes: OpenAI/Anthropic-style
# `sk-…`, GitHub tokens (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_), AWS access key ids (AKIA/ASIA +
# 16) and secret keys named as such, Slack tokens (xox?-), and PEM private-key headers.
_SECRET = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,}"
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r")(?![A-Za-z0-9_-])"
    r"|(?i:aws_secret_access_key)\s*[=:]\s*[A-Za-z0-9/+=]{40,}"
    r"|-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----"
)

_RECOGNIZERS: list[tuple[str, re.Pattern, Any]] = [
    ("secret", _SECRET, None),  # first: a key's digits must not be taken for a phone or card
    ("email", _EMAIL, None),
    ("iban", _IBAN, _iban_ok),
    ("card", _CARD, _card_ok),
    ("national_id", _SSN, None),
    ("national_id", _NINO, None),
    ("ip", _IPV4, _ip_ok),
    ("ip", _IPV6, _ip_ok),
    ("phone", _PHONE, _phone_ok),
]


def detect(text: str) -> list[Finding]:
    """Non-overlapping findings, in text order."""
    taken: list[Finding] = []
    for kind, pattern, check in _RECOGNIZERS:
        for m in pattern.finditer(text):
            if check is not None and not check(m.group()):
                continue
            if any(m.start() < f.end and f.start < m.end() for f in taken):
                continue
            taken.append(Finding(kind, m.start(), m.end()))
    return sorted(taken, key=lambda f: f.start)


def check_mode(mode: str | None) -> str:
    mode = (mode or "off").strip().lower()
    if mode not in MODES:
        raise BadInput(f"unknown --pii mode {mode!r}: use one of {', '.join(MODES)}")
    if mode == "encrypt":
        from genloom.crypto import KEY_ENV, current_key

        if current_key() is None:
            raise BadInput(f"--pii encrypt needs {KEY_ENV} (32 random bytes in base64; see docs/security.md)")
    return mode


def _hash_key() -> bytes:
    """Per-install HMAC key: GENLOOM_PII_HASH_KEY, else a secret file in GENLOOM_HOME (0600)."""
    explicit = os.environ.get("GENLOOM_PII_HASH_KEY", "").strip()
    if explicit:
        return explicit.encode()
    from genloom.config import genloom_home

    path = genloom_home() / "pii-hash.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def _replacement(kind: str, value: str, mode: str) -> str:
    label = kind.upper()
    if mode == "mask":
        return f"<{label}>"
    if mode == "hash":
        return f"<{label}:{hmac.new(_hash_key(), value.encode(), hashlib.sha256).hexdigest()[:12]}>"
    from genloom.crypto import encrypt

    return f"<{label}:{encrypt(value, context=kind.encode())}>"


def pseudonym(value: str | None, mode: str) -> str | None:
    """An identifier as the log stores it under `mode` (a user id, a feedback label): itself when
    off; under mask, hash and encrypt `hmac:` and 32 hex digits of HMAC-SHA256 under the hash
    mode's per-install key, so equal values still group together in analytics while the table
    never holds the clear value (and a list of likely names cannot be hashed to find it)."""
    if value is None or mode == "off":
        return value
    return "hmac:" + hmac.new(_hash_key(), value.encode(), hashlib.sha256).hexdigest()[:32]


def redact(text: str | None, mode: str) -> tuple[str | None, list[Finding]]:
    """(text with each finding replaced per `mode`, findings in the original text)."""
    if not text or mode == "off":
        return text, []
    findings = detect(text)
    if not findings:
        return text, []
    parts, last = [], 0
    for f in findings:
        parts.append(text[last : f.start])
        parts.append(_replacement(f.type, text[f.start : f.end], mode))
        last = f.end
    parts.append(text[last:])
    return "".join(parts), findings


def record_findings(session, object_kind: str, object_id: int, field: str, findings: list[Finding], mode: str) -> None:
    """One row per type: its count and spans (never the values)."""
    from genloom.db.queries.pii import insert_findings

    by_type: dict[str, list[tuple[int, int]]] = {}
    for f in findings:
        by_type.setdefault(f.type, []).append((f.start, f.end))
    if not by_type:
        return
    insert_findings(
        session, object_kind=object_kind, object_id=object_id, field=field, mode=mode, spans_by_type=by_type
    )


def log_mode(collection_mode: str | None) -> str:
    """The mode for the prompt/answer log: the collection's default, else the server's (GENLOOM_PII), else off."""
    return check_mode(collection_mode or os.environ.get(PII_ENV) or "off")
