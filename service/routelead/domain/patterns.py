"""Regular expressions from the config, run on text we do not control (lead fields, buyer answers).

They are compiled with RE2, whose matching time is linear in the input: with Python's `re`, one
careless pattern (`^([a-z]+\\s?)+$`) and one crafted value or buyer answer backtrack for minutes
and stall the event loop, so every lead in the process misses its deadline. RE2 has no
backreferences or lookaround; such a pattern is refused when the config loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, cast

import re2  # google-re2


class Match(Protocol):
    def groupdict(self) -> dict[str, str | None]: ...


class Pattern(Protocol):
    @property
    def pattern(self) -> str: ...

    @property
    def groupindex(self) -> Mapping[str, int]: ...

    def search(self, text: str) -> Match | None: ...

    def fullmatch(self, text: str) -> Match | None: ...


class PatternError(ValueError):
    pass


_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the error is ours to report, with the config path, not on stderr


def compile_pattern(text: str) -> Pattern:
    """RE2 syntax (the Python syntax less backreferences and lookaround); PatternError says why not."""
    try:
        return cast(Pattern, re2.compile(text, options=_OPTIONS))
    except re2.error as exc:
        why = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(
            f"not a valid regular expression ({why}; RE2 syntax: no backreferences or lookaround)"
        ) from None
