"""Text a buyer sends back may echo what it must not show: its own key, the consumer's PII."""

from __future__ import annotations

import re
from collections.abc import Iterable


def scrub_secrets(text: str, secrets: Iterable[str]) -> str:
    """A buyer echoing its own API key (or our token for it) gets it masked, like PII."""
    if not text:
        return text
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "[secret]")
    return text


def redact(text: str, pii_values: Iterable[str]) -> str:
    """A buyer that has the full lead may echo it in its answer: take the lead's own PII out."""
    for pii in pii_values:
        if pii.lower() in text.lower():
            text = re.sub(re.escape(pii), "[redacted]", text, flags=re.IGNORECASE)
    return text
