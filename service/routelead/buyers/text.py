"""Buyer text we keep (ids, reasons, excerpts of broken answers): bounded, printable, no contact details."""

from __future__ import annotations

import re

MAX_TEXT = 200  # ids and reasons we keep from an answer are cut to this
MAX_EXCERPT = 60  # how much of an unreadable answer a reason may quote

_EMAILISH = re.compile(r"[^\s@]+@[^\s@]+")
_DIGIT_RUN = re.compile(r"\d[\d\s().-]{5,}\d")
_SPACE = re.compile(r"\s+")
# Markup (attribute values masked), JSON keys, quoted values, words.
_TOKEN = re.compile(r"""(<[^<>]{0,200}>)|("[^"\\]{0,80}"\s*:)|("[^"]{0,200}"?|'[^']{0,200}'?)|([^\W\d_]+)""")
_ATTR_VALUE = re.compile(r"""("[^"]*"|'[^']*')""")
# Words an answer excerpt may show: answer vocabulary and error pages, never a person's name.
_VOCABULARY = frozenset(
    [
        "accept",
        "accepted",
        "reject",
        "rejected",
        "error",
        "errors",
        "bid",
        "bids",
        "no",
        "not",
        "ok",
        "success",
        "successful",
        "fail",
        "failed",
        "failure",
        "duplicate",
        "dupe",
        "invalid",
        "bad",
        "gateway",
        "internal",
        "server",
        "service",
        "unavailable",
        "timeout",
        "timed",
        "out",
        "found",
        "unauthorized",
        "forbidden",
        "request",
        "response",
        "true",
        "false",
        "null",
        "none",
        "yes",
        "pending",
        "pass",
        "passed",
        "sold",
        "unsold",
        "status",
        "result",
        "price",
        "lead",
        "id",
        "missing",
        "required",
        "field",
        "fields",
        "denied",
        "declined",
        "approved",
        "exception",
        "html",
        "head",
        "body",
        "title",
        "h1",
        "p",
        "div",
        "xml",
        "json",
        "text",
        "plain",
    ]
)


def scrub(text: str, limit: int = MAX_TEXT) -> str:
    """Buyer text goes into attempts and logs: bounded, printable, and with anything that
    looks like an email address or a phone number masked (buyers echo posted leads)."""
    text = "".join(c for c in text[:limit] if c.isprintable())
    return _DIGIT_RUN.sub("[redacted]", _EMAILISH.sub("[redacted]", text))


def _mask(token: re.Match[str]) -> str:
    tag, key, quoted, word = token.groups()
    if tag is not None:
        return _ATTR_VALUE.sub('"…"', tag)
    if key is not None:
        return key
    if quoted is not None:
        return '"…"'
    return word if word.lower() in _VOCABULARY else "…"


def excerpt(body: bytes) -> str:
    """A short quote of an answer we could not read, for the attempt's reason. A post answer
    may echo the lead, so only markup, keys, numbers and answer vocabulary survive: every
    other word and every quoted value is masked, and long digit runs and emails are redacted."""
    text = _SPACE.sub(" ", body[: MAX_EXCERPT * 8].decode("utf-8", "replace")).strip()
    masked = _TOKEN.sub(_mask, text)
    cut = scrub(masked, MAX_EXCERPT)
    return repr(cut + ("…" if len(masked) > MAX_EXCERPT else ""))
