"""User-facing messages: an exception as the one line a page shows (never a traceback)."""
from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 300 characters), or its type's name."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
