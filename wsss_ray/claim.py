"""One writer per output: a run's claim on its output folder, local or on an object store.

A run that writes an output first puts a claim file ``_claim-RUN_ID.json`` there
(host, pid, start time, heartbeat), then lists every claim. If it sees no other live
claim, the output is its own, and a thread keeps its heartbeat fresh. If it sees one,
it withdraws its claim, waits a random moment and looks again: a claim still there
holds the output, and the run refuses with :class:`OutputBusy`, naming that run; if
none is left (two runs that started at once both withdrew), it tries again. Of two
racing runs at most one can see no other claim (each writes before it lists, and
local disks and S3 list what was written), so at most one goes on.

A claim is dead when its heartbeat is older than ``ttl`` seconds, or at once when it
comes from this host and its process is gone (a driver killed and re-run). A dead
claim is taken over: deleted, and the half-written files it left removed. Its run's
write tasks may still be running (Ray keeps them after the driver dies), so each
write checks, just before moving its file into place, that its claim still stands
(:meth:`OutputClaim.holds`); after a takeover the new run waits ``grace`` seconds
before it lists what is written, longer than any such move takes.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass

import pyarrow.fs as pafs

from wsss_ray.errors import JobError
from wsss_ray.files import atomic_write, filesystem, list_files

CLAIM_PREFIX = "_claim-"  # readers of an output skip names that start with "_"
TTL_S = 60.0        # a claim whose heartbeat is older than this is dead
HEARTBEAT_S = 10.0  # how often a live run renews its claim
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
    started: float
    heartbeat: float

    def dead(self, now: float, ttl: float) -> bool:
        """No heartbeat for `ttl` seconds, or a process of this host that no longer exists."""
        if now - self.heartbeat > ttl:
            return True
        return self.host == socket.gethostname() and not _process_alive(self.pid)

    def describe(self, now: float) -> str:
        return (f"run {self.run_id} (host {self.host}, pid {self.pid}, started {now - self.started:.0f} s ago, "
                f"last heartbeat {now - self.heartbeat:.0f} s ago)")


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


def claim_stands(output: str, run_id: str) -> bool:
    """Whether `run_id`'s claim on `output` is still there (a takeover deletes it); for write tasks."""
    fs, path = filesystem(claim_path(output, run_id))
    return fs.get_file_info(path).type == pafs.FileType.File


def read_claims(output: str) -> list[Claim]:
    """Every readable claim on `output` (a claim being replaced may be missing for a moment)."""
    fs, infos = list_files(output)
    claims = []
    for info in infos:
        if not info.base_name.startswith(CLAIM_PREFIX):
            continue
        try:
            with fs.open_input_stream(info.path) as f:
                claims.append(Claim(**json.loads(f.read())))
        except (FileNotFoundError, ValueError, TypeError):
            continue
    return claims


def _refuse_if_held(output: str, ttl: float) -> None:
    live = [c for c in read_claims(output) if not c.dead(time.time(), ttl)]
    if live:
        holder = min(live, key=lambda c: c.started)
        raise OutputBusy(f"output {output} is being written by {holder.describe(time.time())}; wait for it to "
                         f"finish or pass another --output (a claim with no heartbeat for {ttl:.0f} s is taken over)")


def _unwritable(output: str, error: OSError) -> OutputUnwritable:
    return OutputUnwritable(f"cannot write to the output {output}: {error}; check the path or bucket name and that "
                            f"these credentials may write there")


def check_output(output: str, ttl: float = TTL_S) -> None:
    """Fail fast, before Ray or MLflow start: raise :class:`OutputBusy` when a live run holds
    `output`, :class:`OutputUnwritable` when a probe file cannot be written there. The run's own
    claim, taken later, still decides."""
    output = output.rstrip("/")
    _refuse_if_held(output, ttl)
    probe = f"{output}/_probe-{uuid.uuid4().hex}"
    try:
        atomic_write(probe, b"")
        fs, path = filesystem(probe)
        fs.delete_file(path)
    except OSError as e:
        raise _unwritable(output, e) from e


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

    def _write(self) -> None:
        claim = {"run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(),
                 "started": self.started, "heartbeat": time.time()}
        atomic_write(claim_path(self.output, self.run_id), json.dumps(claim).encode())

    def _delete(self, run_id: str) -> None:
        fs, path = filesystem(claim_path(self.output, run_id))
        try:
            fs.delete_file(path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "OutputClaim":
        for _ in range(RACE_ATTEMPTS):
            self.started = time.time()
            try:
                self._write()
            except OSError as e:  # transient errors were retried already (files.filesystem)
                raise _unwritable(self.output, e) from e
            claims = [c for c in read_claims(self.output) if c.run_id != self.run_id]
            if all(c.dead(time.time(), self.ttl) for c in claims):
                break
            self._delete(self.run_id)  # another run holds the output, or is racing for it
            time.sleep(random.uniform(0.1, 1.0))
            _refuse_if_held(self.output, self.ttl)
        else:
            raise OutputBusy(f"output {self.output}: {RACE_ATTEMPTS} attempts to claim it met other runs starting "
                             f"on it; start one run per output")
        for dead in claims:
            self._delete(dead.run_id)
            self.took_over.append(dead.run_id)
        if self.took_over:
            time.sleep(self.grace)  # a dead run's write that passed its check before the delete lands now
        self._thread = threading.Thread(target=self._beat, name=f"claim-{self.run_id[:8]}", daemon=True)
        self._thread.start()
        return self

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


__all__ = ["CLAIM_PREFIX", "Claim", "OutputBusy", "OutputClaim", "OutputUnwritable", "check_output", "claim_path",
           "claim_stands", "read_claims"]
