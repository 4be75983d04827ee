"""structlog as JSON lines; callers never pass PII to a logger (the router logs ids and prices)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import orjson
import structlog
from opentelemetry import trace
from structlog.typing import EventDict, WrappedLogger


def configure_logging(level: str = "INFO", stream: TextIO | None = None, *, cache: bool = True) -> None:
    """JSON lines to `stream`. `cache=False` lets a later call re-route loggers already in use
    (tests capture output this way); serving caches them, which is faster."""
    out = stream if stream is not None else sys.stdout
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_trace_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=lambda o, **_: orjson.dumps(o).decode()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # One write (line and newline together) and a flush per event: with `serve --workers`,
        # processes share stdout, and a line split in two writes interleaves with another's.
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=cache,
    )


def add_trace_ids(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """trace_id and span_id of the current span, so a log line leads to its trace (and back)."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event.setdefault("span_id", format(ctx.span_id, "016x"))
    return event
