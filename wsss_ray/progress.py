"""A job's progress as its stages report it: the row counter actor and the progress line.

The stages report to a :class:`RowCounter` (rows finished, batches started, an item
started alone after its actor died); :class:`Progress` prints the line, and
:func:`killed_by` names the item that ends a stage's process every time.
"""

from __future__ import annotations

import collections
import hashlib
import sys
import threading
import time

import numpy as np
import ray

from wsss_ray.errors import JobError
from wsss_ray.metrics import tag_scores


@ray.remote(num_cpus=0)
class RowCounter:
    """A job's row counts as its stages produce them.

    The resume step (``wsss_ray.store.inputs.pending_block``) reports, per shuffle partition,
    the rows to do, the rows already written and the rows with ground truth; the
    job's last stage adds each batch's rows as it finishes it.
    """

    def __init__(self):
        self.done = self.pending = self.skipped = self.truth = self.partitions = self.scored = 0
        self.confusion: np.ndarray | None = None
        self.tags = np.zeros(5, np.int64)  # wsss_ray.metrics.tag_counts
        self.attempts: collections.Counter = collections.Counter()
        self.suspects: dict[str, str] = {}

    def attempt(self, stage: str, batch: str) -> int:
        self.attempts[stage, batch] += 1
        return self.attempts[stage, batch]

    def suspect(self, stage: str, item: str) -> None:
        """`stage` starts `item` alone, in a batch it retries after its process died."""
        self.suspects[stage] = item

    def suspected(self) -> dict[str, str]:
        """Per stage, the last item it started alone: if the process died again, that one killed it."""
        return dict(self.suspects)

    def retried(self) -> int:
        """Batches that a stage started more than once: retried after a failure (a lost node,
        a dead actor) or recomputed because their output was lost with a node."""
        return sum(1 for n in self.attempts.values() if n > 1)

    def add(self, rows: int, confusion: np.ndarray | None = None, scored: int = 0,
            tags: np.ndarray | None = None) -> None:
        self.done += rows
        if tags is not None:
            self.tags += tags
        if confusion is not None:
            self.confusion = confusion if self.confusion is None else self.confusion + confusion
            self.scored += scored

    def add_pending(self, rows: int, skipped: int, truth: int) -> None:
        self.pending += rows
        self.skipped += skipped
        self.truth += truth
        self.partitions += 1

    def counts(self) -> dict:
        started = collections.Counter(stage for stage, _ in self.attempts)
        return {"done": self.done, "pending": self.pending, "skipped": self.skipped, "truth": self.truth,
                "partitions": self.partitions, "started": dict(started)}

    def scores(self) -> tuple[np.ndarray | None, int]:
        """The confusion matrix summed over finished batches, and how many ground-truth rows it counts."""
        return self.confusion, self.scored

    def tag_scores(self) -> dict:
        """Precision, recall, F1 and the exactly-right share of the proposed labels over the rows that
        had labels given too (``--labels auto``); {} when there were none."""
        return tag_scores(self.tags)

def on_this_node():
    """A scheduling strategy that keeps a job's own actors (counters) on the driver's node,
    which outlives any worker node a cluster may lose."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)

def count_rows(counter, rows: int, confusion: np.ndarray | None = None, scored: int = 0,
               tags: np.ndarray | None = None) -> None:
    """Tell a job's :class:`RowCounter` (if any) that `rows` rows left its last stage, with the
    confusion matrix of the `scored` rows among them that have ground truth and the counts of
    their proposed labels against the given ones (`tags`); never waits."""
    if counter is not None:
        counter.add.remote(rows, confusion, scored, tags)

def count_attempt(counter, stage: str, ids) -> int:
    """Tell a job's :class:`RowCounter` (if any) that `stage` starts the batch of these ids;
    returns the how-manieth time it does (1 without a counter).

    It waits for the counter's answer (a millisecond), so the attempt is on record
    even when the process dies a moment later.
    """
    if counter is None:
        return 1
    key = hashlib.sha1("\n".join(sorted(map(str, ids))).encode()).hexdigest()[:20]
    return ray.get(counter.attempt.remote(stage, key))

def count_suspect(counter, stage: str, item: str) -> None:
    """Tell a job's :class:`RowCounter` (if any) that `stage` starts `item` alone; waits, as
    :func:`count_attempt` does, so the counter knows it even if the process dies on it."""
    if counter is not None:
        ray.get(counter.suspect.remote(stage, str(item)))

def killed_by(suspects: dict[str, str], error: Exception) -> Exception:
    """The error a job fails with when an actor died on every retry: naming the item it died on
    alone when a stage knows it (:func:`count_suspect`), else `error` itself."""
    if not suspects:
        return error
    stage, item = next(iter(suspects.items()))
    return JobError(f"item {item!r} ends the {stage} stage's process each time it takes it (the actor was "
                    f"restarted and died again); take it out of the input, or give the actors more memory if it "
                    f"is a very large image")

def first_batches(started: dict[str, int]) -> str:
    """What a job does before its first row is written, from the batches each stage has started."""
    if not started:
        return "reading and decoding the first images, starting the actors (they load the model)"
    stages = ", ".join(f"{n} in the {stage} stage" for stage, n in started.items())
    return f"working on the first batches ({stages}); none finished yet"

class Progress:
    """Prints ``rows done/total, rows/s, ETA`` every `interval` seconds while a run writes.

    It counts rows as they leave the job's last stage (``counter``, a :class:`RowCounter`
    that stage reports to), so the line moves batch by batch however many rows a Parquet
    file holds. The total is known once all `partitions` of the resume step have
    reported; until then the line says how many have. A batch retried after a failure
    counts twice, so the line never shows more than the total; the job's summary counts
    the written files exactly.
    """

    def __init__(self, counter, partitions: int, interval: float = 10.0, stream=sys.stderr, tag: str = "pseudolabel"):
        self.counter, self.partitions, self.interval, self.stream, self.tag = counter, partitions, interval, stream, tag
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="wsss-ray-progress")
        self.start = time.time()

    def __enter__(self) -> "Progress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def line(self) -> str:
        c = ray.get(self.counter.counts.remote(), timeout=self.interval)
        elapsed = time.time() - self.start
        done = min(c["done"], c["pending"])
        rate = done / elapsed if elapsed > 0 else 0.0
        if c["partitions"] < self.partitions:
            return (f"[{self.tag}] {done} rows, {rate:.2f} rows/s; finding the rows to do "
                    f"({c['partitions']}/{self.partitions} input partitions, {c['pending']} rows so far)")
        if done == 0 and c["pending"]:
            return f"[{self.tag}] 0/{c['pending']} rows; {first_batches(c['started'])}"
        eta = f"{(c['pending'] - done) / rate:.0f} s" if rate > 0 else "unknown"
        pct = 100 * done / c["pending"] if c["pending"] else 100
        return f"[{self.tag}] {done}/{c['pending']} rows ({pct:.0f}%), {rate:.2f} rows/s, ETA {eta}"

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                print(self.line(), file=self.stream, flush=True)
            except (ray.exceptions.RayError, TimeoutError):  # a busy or restarting counter: the next tick
                pass
