"""Errors a user fixes, not bugs: their one sentence is the whole message a job prints."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator


class JobError(RuntimeError):
    """What is wrong and what to do, in one sentence; the jobs print it without a traceback."""


@contextlib.contextmanager
def exit_on_job_error(tag: str) -> Iterator[None]:
    """Turn a :class:`JobError` into ``[tag] error: ...`` on stderr and exit status 2."""
    try:
        yield
    except JobError as e:
        print(f"[{tag}] error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
