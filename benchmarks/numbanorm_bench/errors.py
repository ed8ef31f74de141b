"""Why the suite cannot run, and failures reported in one line."""

from __future__ import annotations


class BenchError(Exception):
    """The benchmark cannot run here (exit status 1)."""


def short(e: BaseException) -> str:
    """``Type: first line of the message``, at most 300 characters."""
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:300]
