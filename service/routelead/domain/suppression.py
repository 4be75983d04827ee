"""Suppression lists (do-not-contact, litigators, opted-out domains): which normalised values of
a lead a list entry can match, and what kind of value an entry is. The lists hold keyed digests
of these (the dedupe key's HMAC), never the values."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from routelead.domain.identity import e164, normalise

KINDS = ("phone", "email", "zip", "domain")
_ZIP = re.compile(r"^\d{5}(-\d{4})?$")
_PHONE = re.compile(r"^[0-9()+.\s-]{10,20}$")
_DOMAIN = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)+$")


def entry(value: str, kind: str | None = None) -> tuple[str, str]:
    """(kind, normalised value) of a list entry; ValueError names what it could not be."""
    text = value.strip()
    if kind is None:
        if text.startswith("@"):
            kind = "domain"
        elif "@" in text:
            kind = "email"
        elif _ZIP.match(text):
            kind = "zip"
        elif _PHONE.match(text) and sum(c.isdigit() for c in text) >= 10:
            kind = "phone"
        elif _DOMAIN.match(text.lower()):
            kind = "domain"
        else:
            raise ValueError("not a phone, e-mail address, ZIP code or domain")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    match kind:
        case "phone":
            out = e164(text)
        case "zip":
            out = text[:5]
        case "domain":
            out = text.lower().removeprefix("@")
        case _:
            out = normalise("email", text)
    if not out:
        raise ValueError(f"an empty {kind}")
    return kind, out


def lead_values(fields: Mapping[str, str], types: Mapping[str, str]) -> list[tuple[str, str]]:
    """What of a lead the lists are checked against: its phones, e-mails (and their domains), ZIPs."""
    out: list[tuple[str, str]] = []
    for name, value in fields.items():
        t = types.get(name)
        if not value or t not in ("phone", "email", "zip"):
            continue
        try:
            out.append(entry(value, t))
        except ValueError:
            continue
        if t == "email" and "@" in value:
            out.append(("domain", value.rsplit("@", 1)[1].strip().lower()))
    return out


def digest(fingerprint: Callable[[list[str]], str], kind: str, value: str) -> str:
    """The keyed digest a list holds for a normalised (kind, value): the dedupe key's HMAC."""
    return fingerprint(["suppress", kind, value])
