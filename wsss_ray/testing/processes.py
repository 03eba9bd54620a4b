"""A process and everything it started, for killing a job mid-write."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path


def command_lines() -> dict[int, str]:
    """Every live process's command line (arguments joined by spaces), read from /proc."""
    out = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):  # the process ended while we looked
            out[int(cmdline.parent.name)] = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return out


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`, read from /proc (Ray starts some in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # the process ended while we looked
            children.setdefault(int(stat.read_text().rsplit(")", 1)[1].split()[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL `proc` (started with ``start_new_session=True``) and every process it started,
    so nothing it began can finish a write afterwards."""
    tree = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
