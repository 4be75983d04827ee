"""Who a lead is, for duplicate checks: normalised identity values and their keyed digest.

The digest is an HMAC with a secret from the environment, so the stored keys hold no PII and
cannot be confirmed by hashing a guessed e-mail address."""

from __future__ import annotations

import hashlib
import hmac
import re

_SPACES = re.compile(r"\s+")
_NOT_DIGITS = re.compile(r"[^0-9]")  # ASCII: \D would keep Unicode digits


def normalise(kind: str, value: str) -> str:
    """The same person written two ways gives the same string."""
    value = value.strip()
    match kind:
        case "email":
            return value.lower()
        case "phone":
            return e164(value)
        case _:
            return _SPACES.sub(" ", value).casefold()


def e164(phone: str) -> str:
    """North-American numbers (the schema's phone type) in E.164; other digits kept with a +."""
    digits = _NOT_DIGITS.sub("", phone)
    if len(digits) == 10:
        return "+1" + digits
    if len(digits) == 11 and digits.startswith("1"):
        return "+" + digits
    return "+" + digits if digits else ""


def fingerprint(key: bytes, values: list[str]) -> str:
    """HMAC-SHA256 over the values, unambiguous however they split (length-prefixed)."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for v in values:
        raw = v.encode()
        mac.update(len(raw).to_bytes(4, "big"))
        mac.update(raw)
    return mac.hexdigest()[:32]
