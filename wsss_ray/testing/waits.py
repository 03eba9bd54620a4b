"""Waiting on an event instead of sleeping a fixed time."""

from __future__ import annotations

import time
from typing import Callable


def wait_until(condition: Callable[[], object], timeout: float = 30.0, poll: float = 0.01) -> None:
    """Return once `condition()` holds (polled every `poll` seconds); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s"
        time.sleep(poll)
