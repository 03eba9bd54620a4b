"""One writer per output: a run's claim on its output folder, local or on an object store.

A run that writes an output first puts a claim file ``_claim-RUN_ID.json`` there
(host, pid, start time, the runs it took over), then lists every claim. If it sees no
other live claim, the output is its own, and a thread rewrites its claim every
``heartbeat`` seconds. If it sees one, it withdraws its claim, waits a random moment
and looks again: a claim still there holds the output, and the run refuses with
:class:`OutputBusy`, naming that run; if none is left (two runs that started at once
both withdrew), it tries again. Of two racing runs at most one can see no other claim
(each writes before it lists, and local disks and S3 list what was written), so at
most one goes on.

A claim's age is measured by the store's own clock: the time since the store last
modified its file, against the modification time of a file this run has just written
there, so hosts whose clocks disagree still agree on it. A claim is dead when it is
older than ``ttl`` seconds, or at once when it comes from this host and its process is
gone (a driver killed and re-run). A dead claim is taken over: the new run names it in
its own claim first, then deletes it and removes the half-written files it left. A
claim named by another claim is dead whatever its age, so a heartbeat of the old run
that lands after the takeover (it checked just before) brings nothing back. The old
run's write tasks may still be running (Ray keeps them after the driver dies), so
each write checks, just before moving its file into place, that its claim still
stands (:func:`claim_stands`); after a takeover the new run waits ``grace`` seconds
before it lists what is written, longer than any such move takes.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass, replace

import pyarrow.fs as pafs

from wsss_ray.errors import JobError
from wsss_ray.store.files import atomic_write, filesystem, is_temporary, list_files, retry_transient

CLAIM_PREFIX = "_claim-"  # readers of an output skip names that start with "_"
TTL_S = 60.0        # a claim the store last wrote longer ago than this is dead
HEARTBEAT_S = 10.0  # how often a live run rewrites its claim
RACE_ATTEMPTS = 8   # claims withdrawn and retried when runs start at once
GRACE_S = 5.0       # after taking over a dead claim: the longest a dead run's last move can take


class OutputBusy(JobError):
    """Another live run holds the output."""


class OutputUnwritable(JobError):
    """The output cannot be written at all (no such bucket, access denied): found before any work."""


@dataclass(frozen=True)
class Claim:
    run_id: str
    host: str
    pid: int
    started: float                # the run's own clock: which of two live runs came first
    took_over: tuple[str, ...]    # the dead runs this run replaced
    written: float                # when the store last wrote the claim, by the store's clock
    taken_over: bool = False      # another claim names this one as replaced

    def dead(self, now: float, ttl: float) -> bool:
        """Taken over, not rewritten for `ttl` seconds before `now` (a time of the store's clock,
        :func:`store_now`), or a process of this host that no longer exists."""
        if self.taken_over or now - self.written > ttl:
            return True
        return self.host == socket.gethostname() and not _process_alive(self.pid)

    def describe(self, now: float) -> str:
        return (f"run {self.run_id} (host {self.host}, pid {self.pid}, last heartbeat "
                f"{max(0.0, now - self.written):.0f} s ago)")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def claim_path(output: str, run_id: str) -> str:
    return f"{output.rstrip('/')}/{CLAIM_PREFIX}{run_id}.json"


def _mtime(info: pafs.FileInfo) -> float:
    return info.mtime.timestamp()


def store_now(output: str) -> float:
    """The store's clock: the modification time of a probe file written to `output` just now."""
    probe = f"{output.rstrip('/')}/_probe-{uuid.uuid4().hex}"
    atomic_write(probe, b"")
    fs, path = filesystem(probe)
    now = _mtime(fs.get_file_info(path))
    fs.delete_file(path)
    return now


def _read(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def _parse(fs: pafs.FileSystem, info: pafs.FileInfo) -> Claim | None:
    """The claim in file `info`, or None when it is gone or unreadable (being replaced)."""
    try:
        fields = json.loads(retry_transient(lambda: _read(fs, info.path)))
        return Claim(run_id=str(fields["run_id"]), host=str(fields["host"]), pid=int(fields["pid"]),
                     started=float(fields["started"]), took_over=tuple(fields.get("took_over", ())),
                     written=_mtime(info))
    except (FileNotFoundError, ValueError, TypeError, KeyError):
        return None


def _claim_files(output: str) -> tuple[pafs.FileSystem, list[pafs.FileInfo]]:
    fs, infos = list_files(output)
    return fs, [i for i in infos if i.base_name.startswith(CLAIM_PREFIX)]


def read_claims(output: str) -> list[Claim]:
    """Every readable claim on `output` (a claim being replaced may be missing for a moment)."""
    fs, infos = _claim_files(output)
    found = [c for c in (_parse(fs, info) for info in infos) if c is not None]
    replaced = {run_id for c in found for run_id in c.took_over}
    return [replace(c, taken_over=True) if c.run_id in replaced else c for c in found]


def claim_stands(output: str, run_id: str) -> bool:
    """Whether `run_id`'s claim on `output` is still its own: there, and named by no takeover.

    One listing, and a read of each other run's claim (usually none): every write task asks it.
    """
    fs, infos = _claim_files(output)
    own = posixpath.basename(claim_path(output, run_id))
    if own not in {i.base_name for i in infos}:
        return False
    others = (_parse(fs, info) for info in infos if info.base_name != own)
    return not any(c is not None and run_id in c.took_over for c in others)


def _refuse_if_held(output: str, ttl: float, now: float | None = None) -> None:
    now = store_now(output) if now is None else now
    live = [c for c in read_claims(output) if not c.dead(now, ttl)]
    if live:
        holder = min(live, key=lambda c: c.started)
        raise OutputBusy(f"output {output} is being written by {holder.describe(now)}; wait for it to finish or pass "
                         f"another --output (a claim with no heartbeat for {ttl:.0f} s is taken over)")


def _unwritable(output: str, error: OSError) -> OutputUnwritable:
    return OutputUnwritable(f"cannot write to the output {output}: {error}; check the path or bucket name and that "
                            f"these credentials may write there")


def check_output(output: str, ttl: float = TTL_S) -> None:
    """Fail fast, before Ray or MLflow start: raise :class:`OutputUnwritable` when a probe file
    cannot be written to `output`, :class:`OutputBusy` when a live run holds it. The run's own
    claim, taken later, still decides."""
    output = output.rstrip("/")
    try:
        now = store_now(output)
    except OSError as e:
        raise _unwritable(output, e) from e
    _refuse_if_held(output, ttl, now)


class OutputClaim:
    """This run's claim on `output`: ``with OutputClaim(output, run_id) as claim: ...`` (see the module).

    Entering raises :class:`OutputBusy` when a live run holds the output, or the
    filesystem's error (no such bucket, access denied) before anything is written.
    ``took_over`` lists the dead runs whose claims this run replaced.
    """

    def __init__(self, output: str, run_id: str, ttl: float = TTL_S, heartbeat: float = HEARTBEAT_S,
                 grace: float = GRACE_S):
        self.output, self.run_id = output.rstrip("/"), run_id
        self.ttl, self.heartbeat, self.grace = ttl, heartbeat, grace
        self.started = 0.0
        self.took_over: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> float:
        """Write this run's claim; returns its modification time, the store's clock now."""
        claim = {"run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(),
                 "started": self.started, "took_over": self.took_over}
        path = atomic_write(claim_path(self.output, self.run_id), json.dumps(claim).encode())
        fs, inner = filesystem(path)
        return _mtime(fs.get_file_info(inner))

    def _delete(self, run_id: str) -> None:
        fs, path = filesystem(claim_path(self.output, run_id))
        try:
            fs.delete_file(path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "OutputClaim":
        self.started = time.time()
        for _ in range(RACE_ATTEMPTS):
            try:
                now = self._write()
            except OSError as e:  # transient errors were retried already (files.filesystem)
                raise _unwritable(self.output, e) from e
            claims = [c for c in read_claims(self.output) if c.run_id != self.run_id]
            if all(c.dead(now, self.ttl) for c in claims):
                break
            self._delete(self.run_id)  # another run holds the output, or is racing for it
            time.sleep(random.uniform(0.1, 1.0))
            _refuse_if_held(self.output, self.ttl)
        else:
            raise OutputBusy(f"output {self.output}: {RACE_ATTEMPTS} attempts to claim it met other runs starting "
                             f"on it; start one run per output")
        if claims:
            self.took_over = sorted(c.run_id for c in claims)
            self._write()  # named here first: a late heartbeat of a replaced run can no longer bring it back
            self._remove_replaced()
            time.sleep(self.grace)  # a dead run's write that passed its check before the delete lands now
        self._thread = threading.Thread(target=self._beat, name=f"claim-{self.run_id[:8]}", daemon=True)
        self._thread.start()
        return self

    def _remove_replaced(self) -> None:
        """Delete the claims this run took over, and their half-written claim files."""
        for run_id in self.took_over:
            self._delete(run_id)
        fs, infos = list_files(self.output)
        for info in infos:
            if is_temporary(info.base_name) and any(
                    info.base_name.startswith(f".{CLAIM_PREFIX}{run_id}.") for run_id in self.took_over):
                with contextlib.suppress(FileNotFoundError):
                    fs.delete_file(info.path)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                if not claim_stands(self.output, self.run_id):
                    return  # taken over (this run looked dead): its writes now fail their check
                self._write()
            except OSError:  # a transient store error: the next beat tries again, well within the ttl
                continue

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._delete(self.run_id)
        if self.took_over:
            self._remove_replaced()  # a replaced run's heartbeat that landed after the takeover


__all__ = ["CLAIM_PREFIX", "Claim", "OutputBusy", "OutputClaim", "OutputUnwritable", "check_output", "claim_path",
           "claim_stands", "read_claims", "store_now"]
