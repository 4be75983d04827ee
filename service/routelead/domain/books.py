"""What the books can answer a router that asked them to record or offer a lead: shared by the
books, the hot state that keeps answers, and the API that turns them into gRPC statuses."""

from __future__ import annotations


class BooksUnavailable(RuntimeError):
    """The books refuse writes: nothing was routed (gRPC UNAVAILABLE; retry later)."""


class Unbooked(BooksUnavailable):
    """The lead was routed but its record is not written yet. It is held and retried; a retry with
    the same lead_id gets the lead's answer once it is booked, and never routes it again."""


class AlreadyOffered(RuntimeError):
    """The books say another call (any process, any replica) offered or answered this lead_id:
    it is answered from the books, never posted again."""
