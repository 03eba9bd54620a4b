"""Processes that tests start: a job to kill mid-write, a server to wait for and stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator


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
    so nothing it began can finish a write afterwards. A process that already ended is fine."""
    tree = descendants(proc.pid)
    for kill, target in [(os.killpg, proc.pid), *((os.kill, pid) for pid in tree)]:
        with contextlib.suppress(ProcessLookupError):
            kill(target, signal.SIGKILL)
    proc.wait()


def log_tail(path: Path, lines: int = 25) -> str:
    """The last `lines` lines of a log file ('' when there is none)."""
    with contextlib.suppress(OSError):
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    return ""


class ServerFailed(RuntimeError):
    """A server a test started exited or never became ready; the message ends with its log's last lines."""


def wait_ready(proc: subprocess.Popen, ready: Callable[[], bool], log: Path, what: str,
               timeout: float = 120.0, poll: float = 0.5) -> None:
    """Return once `ready()` holds; raise ServerFailed, quoting `log`, if `proc` exits first or
    `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ServerFailed(f"{what} exited with status {proc.returncode} before it was ready; "
                               f"the last lines of {log}:\n{log_tail(log)}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise ServerFailed(f"{what} was not ready after {timeout:.0f} s; the last lines of {log}:\n{log_tail(log)}")
        time.sleep(poll)


@contextlib.contextmanager
def server(cmd: list[str], ready: Callable[[], bool], log: Path, what: str, env: dict | None = None,
           timeout: float = 120.0) -> Iterator[subprocess.Popen]:
    """Run `cmd` in a session of its own with its output in `log`, yield it once `ready()` holds
    (see wait_ready), and kill it and everything it started on exit, whether it still runs or not."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            wait_ready(proc, ready, log, what, timeout)
            yield proc
        finally:
            kill_tree(proc)


def http_ok(url: str, timeout: float = 5.0) -> bool:
    """Whether a GET of `url` answers 2xx now (False while nothing listens or it errors)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (OSError, ValueError):
        return False
