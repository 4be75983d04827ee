"""Buyer text we keep (ids, reasons, excerpts of broken answers): bounded, printable, no contact details."""

from __future__ import annotations

import re

MAX_TEXT = 200  # ids and reasons we keep from an answer are cut to this
MAX_EXCERPT = 48  # how much of an unreadable answer a reason may quote

_EMAILISH = re.compile(r"[^\s@]+@[^\s@]+")
_DIGIT_RUN = re.compile(r"\d[\d\s().-]{5,}\d")
_SPACE = re.compile(r"\s+")


def scrub(text: str, limit: int = MAX_TEXT) -> str:
    """Buyer text goes into attempts and logs: bounded, printable, and with anything that
    looks like an email address or a phone number masked (buyers echo posted leads)."""
    text = "".join(c for c in text[:limit] if c.isprintable())
    return _DIGIT_RUN.sub("[redacted]", _EMAILISH.sub("[redacted]", text))


def excerpt(body: bytes) -> str:
    """A short quote of an answer we could not read, for the attempt's reason."""
    text = _SPACE.sub(" ", body[: MAX_EXCERPT * 4].decode("utf-8", "replace")).strip()
    cut = scrub(text, MAX_EXCERPT)
    return repr(cut + ("…" if len(text) > MAX_EXCERPT else ""))
