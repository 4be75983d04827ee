"""One buyer endpoint (ping or post): where to send, how, and how to build the request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from routelead.buyers.base import HttpRequest
from routelead.buyers.encoders import Encoder
from routelead.domain.mapping import Transaction

ACCEPT = {
    "json": "application/json",
    "xml": "application/xml, text/xml",
    "text": "text/plain",
    "html": "text/html",
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    method: str
    headers: tuple[tuple[str, str], ...]
    body: Encoder
    timeout_s: float

    def request(self, fields: Mapping[str, str], tx: Transaction) -> HttpRequest:
        url, payload = self.body.encode(self.url, fields, tx)
        return HttpRequest(self.method, url, self.headers, payload)


def default_headers(
    headers: Sequence[tuple[str, str]], content_type: str | None, answer_format: str = "json"
) -> tuple[tuple[str, str], ...]:
    """The configured headers, plus Content-Type and Accept unless the buyer's config sets them."""
    names = {k.lower() for k, _ in headers}
    extra = []
    if content_type is not None and "content-type" not in names:
        extra.append(("Content-Type", content_type))
    if "accept" not in names:
        extra.append(("Accept", ACCEPT.get(answer_format, "*/*")))
    return (*headers, *extra)
