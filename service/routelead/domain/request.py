"""What makes a repeat of a lead_id the same request: keyed digests of its fields.

A lead_id names one request. A repeat with other fields must be refused, not answered with the
first request's result (nor routed again), and the refusal must say *which* fields differ without
showing a value. So each field's value is kept only as a keyed digest (BLAKE2b, 8 bytes, under a
key derived from the dedupe key): nothing in it can be reversed or guessed without that key, and
two digests compare field by field. Flow, source and the test flag are compared as they are (the
answer holds them); a test call never meets a real one's answer (outcome.answer_key).

The digest reads `k<key id> name:digest name:digest …`: answers digested under another key (a
process without a configured dedupe key, restarted) cannot be compared and are not refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from urllib.parse import quote


class RequestDigester:
    def __init__(self, key: bytes) -> None:
        self._key = hashlib.blake2b(key, digest_size=32, person=b"rl-request").digest()
        self._id = "k" + hashlib.blake2b(b"id", key=self._key, digest_size=3).hexdigest()

    def digest(self, fields: Mapping[str, str]) -> str:
        key = self._key
        return " ".join(
            [
                self._id,
                *(
                    f"{_name(name)}:{hashlib.blake2b(value.encode(), key=key, digest_size=8).hexdigest()}"
                    for name, value in sorted(fields.items())
                ),
            ]
        )


def differing_fields(first: str, repeat: str) -> list[str] | None:
    """The names of the fields whose values differ (or that only one request has); None when the
    digests were made under different keys and cannot be compared."""
    if not first or not repeat:
        return None
    a_id, *a = first.split(" ")
    b_id, *b = repeat.split(" ")
    if a_id != b_id:
        return None
    old = dict(p.rsplit(":", 1) for p in a)
    new = dict(p.rsplit(":", 1) for p in b)
    return sorted(n for n in old.keys() | new.keys() if old.get(n) != new.get(n))


def _name(name: str) -> str:
    # Names are the caller's; a space would split the digest, so such a name is %-quoted.
    return quote(name, safe="") if " " in name or "%" in name else name
