"""The rows every Parquet-writing job shares: items in, decoded batches, Parquet out.

The output contract (docs/DESIGN.md) is :data:`OUTPUT_SCHEMA`: one row per input
item, ``ok`` or ``error``. Both the labelling job (``wsss_ray.pipeline``) and
prediction (``wsss_ray.train.predict``) build their Ray Data graphs from the same
pieces here: the driver skeleton :func:`write_pending` (clear what a killed run
left, read the input and skip ids already written inside the dataset, write
atomically with a progress line, count what this run wrote), the decode stage, the
row builders and the atomic sink, and the readers of a finished output
(:func:`read_output`, :func:`evaluate_output`). Nothing on the driver grows with
the collection (``wsss_ray.inputs`` has the input side).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import math
import sys
import threading
import time
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
from ray.data import Datasink
from ray.data.block import BlockAccessor

from wsss_ray.claim import CLAIM_PREFIX, OutputClaim, claim_stands
from wsss_ray.errors import JobError
from wsss_ray.files import atomic_write, filesystem, is_temporary, list_files, read_bytes
from wsss_ray.masks import decode_png, encode_png
from wsss_ray.metrics import accumulate, scores
from wsss_ray.inputs import pending, read_items
from wsss_ray.sources import Item, decode_within, load_image, load_mask

OUTPUT_SCHEMA = pa.schema([
    ("id", pa.string()), ("image", pa.string()), ("labels", pa.list_(pa.string())),
    ("width", pa.int32()), ("height", pa.int32()), ("mask", pa.binary()), ("confidence", pa.binary()),
    ("status", pa.string()), ("error", pa.string()),
    ("labelset", pa.string()), ("model", pa.string()), ("method", pa.string()), ("run_id", pa.string()),
])


# ------------------------------------------------------------------ batches


def writable_batch(batch: dict) -> dict:
    """Ray hands batches over zero-copy (read-only); stages write status/error per row."""
    batch["status"] = np.array(batch["status"], dtype=object)
    # An all-null column arrives as float NaN; errors are strings or None.
    batch["error"] = np.array([e if isinstance(e, str) else None for e in batch["error"]], dtype=object)
    # Lists, not numpy string arrays: ragged arrays would make Ray try (and fail) a tensor column.
    batch["labels"] = objects([[str(label) for label in labels] for labels in batch["labels"]])
    return batch


def objects(values: list) -> np.ndarray:
    """A 1-D object array of arrays (np.array would stack same-shape arrays into one block)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def mark_error(batch: dict, i: int, message: str) -> None:
    """Row `i` becomes an ``error`` row with `message`; the other rows go on."""
    batch["status"][i] = "error"
    batch["error"][i] = message


def failure(step: str, error: BaseException) -> str:
    """One sentence for a row whose `step` raised: the error's type and the first line of its
    message (an allocator's message can run to pages), at most 300 characters."""
    first = (str(error).strip().splitlines() or [""])[0]
    text = f"{step} failed: {type(error).__name__}" + (f": {first}" if first else "")
    return text if len(text) <= 300 else text[:297] + "..."


def decode_stage(batch: dict, max_pixels: int, max_side: int | None = None) -> dict:
    """Read and decode each image (CPU task) into ``pixels``; a failure becomes an error row.

    ``pixels`` is the image shrunk to `max_side` on its long side (``wsss_ray.budget``;
    None: full size); ``height`` and ``width`` are always the whole image's.
    """
    batch = writable_batch(batch)
    pixels, sizes = [], []
    for i in range(len(batch["id"])):
        try:
            if batch["status"][i] != "ok":
                raise ValueError(batch["error"][i])
            image, size = decode_within(read_bytes(batch["image"][i]), max_pixels, max_side)
        except Exception as e:  # noqa: BLE001 - any failure of one item is that item's error row
            if batch["status"][i] == "ok":
                mark_error(batch, i, f"cannot read image {batch['image'][i]}: {type(e).__name__}: {e}")
            image, size = np.zeros((1, 1, 3), np.uint8), (1, 1)
        pixels.append(image)
        sizes.append(size)
    batch["pixels"] = objects(pixels)
    batch["height"] = np.array([h for h, _ in sizes], np.int32)
    batch["width"] = np.array([w for _, w in sizes], np.int32)
    return batch


def full_pixels(batch: dict, i: int, max_pixels: int) -> np.ndarray:
    """Row `i`'s image at its full size: its ``pixels`` when the decode kept them whole, else decoded again."""
    pixels = batch["pixels"][i]
    if pixels.shape[:2] == (batch["height"][i], batch["width"][i]):
        return pixels
    return decode_within(read_bytes(batch["image"][i]), max_pixels)[0]


def png_rows(batch: dict, make: Callable[[int], tuple[np.ndarray, np.ndarray]], step: str) -> list:
    """(mask PNG, confidence PNG) from ``make(i)`` for each ok row, None elsewhere.

    A row whose `step` raises becomes that row's error; the others go on.
    """
    out: list[tuple[bytes, bytes] | None] = [None] * len(batch["id"])
    for i in range(len(out)):
        if batch["status"][i] != "ok":
            continue
        try:
            mask, conf = make(i)
            out[i] = encode_png(mask), encode_png(conf, palette=False)
        except Exception as e:  # noqa: BLE001 - one item's failure is that item's error row
            mark_error(batch, i, failure(step, e))
    return out


def output_table(batch: dict, pngs: list, *, labelset: str | None, model: str, method: str, run_id: str
                 ) -> pa.Table:
    """A batch and its (mask, confidence) PNGs as rows of OUTPUT_SCHEMA."""
    n = len(batch["id"])
    return pa.table({
        "id": [str(x) for x in batch["id"]],
        "image": [str(x) for x in batch["image"]],
        "labels": list(batch["labels"]),
        "width": batch["width"], "height": batch["height"],
        "mask": [p and p[0] for p in pngs], "confidence": [p and p[1] for p in pngs],
        "status": list(batch["status"]), "error": list(batch["error"]),
        "labelset": [labelset] * n, "model": [model] * n, "method": [method] * n, "run_id": [run_id] * n,
    }, schema=OUTPUT_SCHEMA)


# ------------------------------------------------------------------ writing


class AtomicParquetSink(Datasink):
    """One Parquet file per write task, made visible only once complete.

    Files are written through :func:`wsss_ray.files.atomic_write`, so a killed job
    never leaves a half-written file that a re-run would read. The name is a hash of
    the ids it holds, so a retried write task replaces its own file instead of
    duplicating rows. With `run_id`, a file is moved into place only while that run's
    claim on the output stands (``wsss_ray.claim``): a write task that outlives its
    killed driver cannot add rows that the run taking over writes too.
    """

    def __init__(self, output: str, run_id: str | None = None):
        self.output, self.run_id = output, run_id
        self.counts = {"rows": 0, "ok": 0, "errors": 0}

    def _claim_stands(self) -> None:
        if self.run_id is not None and not claim_stands(self.output, self.run_id):
            raise ClaimLost(f"run {self.run_id}'s claim on {self.output} was taken over by another run; "
                            f"this run's remaining files are dropped, the other run writes them")

    def on_write_start(self, schema=None) -> None:
        fs, path = filesystem(self.output)
        fs.create_dir(path, recursive=True)

    def write(self, blocks, ctx) -> dict:
        """Write the task's blocks as one file; returns its rows, ok rows and error rows."""
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return {"rows": 0, "ok": 0, "errors": 0}
        table = pa.concat_tables(tables)
        digest = hashlib.sha1("\n".join(sorted(table.column("id").to_pylist())).encode()).hexdigest()[:20]
        atomic_write(f"{self.output.rstrip('/')}/part-{digest}.parquet",
                     lambda fs, tmp: pq.write_table(table, tmp, filesystem=fs), check=self._claim_stands)
        ok = pc.sum(pc.equal(table.column("status"), "ok")).as_py() or 0
        return {"rows": table.num_rows, "ok": ok, "errors": table.num_rows - ok}

    def on_write_complete(self, write_result) -> None:
        """Sum what this run's write tasks wrote (on the driver, once every task has succeeded)."""
        for returned in write_result.write_returns:
            for key in self.counts:
                self.counts[key] += returned[key]


def parquet_files(output: str) -> tuple[pafs.FileSystem, list[str]]:
    """The complete Parquet files under `output` (hidden and temporary names skipped), sorted."""
    fs, infos = list_files(output)  # sorted by path
    return fs, [i.path for i in infos if i.base_name.endswith(".parquet") and not i.base_name.startswith((".", "_"))]


def read_output(output: str, columns: list[str] | None = None) -> pa.Table | None:
    """The complete Parquet files under `output` (local or URI) as one table (None before the first)."""
    fs, files = parquet_files(output)
    if not files:
        return None
    return pads.dataset(files, format="parquet", filesystem=fs).to_table(columns=columns)


class ClaimLost(RuntimeError):
    """This run's claim on its output was taken over; its writes stop."""


def on_this_node():
    """A scheduling strategy that keeps a job's own actors (counters) on the driver's node,
    which outlives any worker node a cluster may lose."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def remove_temporaries(output: str) -> None:
    """Drop the half-written files of a killed run (one job writes to an output at a time).

    Claims' own temporaries are left to the claims: this run's heartbeat may be writing one.
    """
    fs, infos = list_files(output)
    for info in infos:
        if is_temporary(info.base_name) and not info.base_name.startswith(f".{CLAIM_PREFIX}"):
            with contextlib.suppress(FileNotFoundError):  # moved into place since the listing
                fs.delete_file(info.path)


@ray.remote(num_cpus=0)
class RowCounter:
    """A job's row counts as its stages produce them.

    The resume step (``wsss_ray.inputs.pending_block``) reports, per shuffle partition,
    the rows to do, the rows already written and the rows with ground truth; the
    job's last stage adds each batch's rows as it finishes it.
    """

    def __init__(self):
        self.done = self.pending = self.skipped = self.truth = self.partitions = self.scored = 0
        self.confusion: np.ndarray | None = None
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

    def add(self, rows: int, confusion: np.ndarray | None = None, scored: int = 0) -> None:
        self.done += rows
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


def count_rows(counter, rows: int, confusion: np.ndarray | None = None, scored: int = 0) -> None:
    """Tell a job's :class:`RowCounter` (if any) that `rows` rows left its last stage, with the
    confusion matrix of the `scored` rows among them that have ground truth; never waits."""
    if counter is not None:
        counter.add.remote(rows, confusion, scored)


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


def batch_confusion(truths: list, table: pa.Table, num_classes: int) -> tuple[np.ndarray | None, int]:
    """A finished batch's confusion matrix against its ground truth (`truths`: a mask path or None
    per row of `table`) and the number of rows it counts; (None, 0) when a mask cannot be read,
    so the job falls back to :func:`evaluate_output` (which reports the unreadable mask)."""
    rows = [(t, s, m) for t, s, m in zip(truths, table.column("status").to_pylist(),
                                         table.column("mask").to_pylist()) if t is not None]
    if not rows:
        return None, 0
    try:
        return accumulate(truth_pairs(rows), num_classes), len(rows)
    except Exception:  # noqa: BLE001 - a bad ground-truth path must not lose the batch's labels
        return None, 0


def truth_pairs(rows: Iterable[tuple[str, str, bytes | None]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ground truth, written mask) for (truth path, status, mask PNG) rows; an error row is all background,
    so a failing labeller cannot look better."""
    for truth, status, mask in rows:
        gt = load_mask(truth)
        yield gt, decode_png(mask) if status == "ok" else np.zeros_like(gt)


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


# ------------------------------------------------------------------ the driver skeleton


def pending_rows(items: list[Item], done: set[str]) -> list[dict]:
    """Input rows for the items not in `done`; a repeated id becomes an error row (for small in-memory lists)."""
    seen: set[str] = set()
    rows = []
    for it in items:
        if it.id in done:
            continue
        dup = it.id in seen
        seen.add(it.id)
        rows.append({"id": it.id, "image": it.image, "labels": list(it.labels),
                     "status": "error" if dup else "ok",
                     "error": f"duplicate id {it.id!r} in the input; ids must be unique" if dup else None})
    return rows


def items_dataset(rows: list[dict], rows_per_file: int) -> ray.data.Dataset:
    """In-memory rows as a dataset of `rows_per_file`-row blocks."""
    return ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / rows_per_file)))


def block_rows(rows: int, batch_size: int, rows_per_file: int, holders: int) -> int:
    """Rows per block between the stages: a file's worth, or less so that every actor gets several blocks.

    Each block costs the driver some bookkeeping (Ray Data's per-block stats, Ray's
    ownership of its objects), so large collections flow in blocks of `rows_per_file`;
    a small one is cut into about four blocks per actor, never below one batch.
    """
    return max(batch_size, min(rows_per_file, math.ceil(rows / (4 * max(1, holders)))))


def write_pending(source: str, output: str, run_id: str,
                  graph: Callable[[ray.data.Dataset, Any], ray.data.Dataset], batch_size: int, rows_per_file: int,
                  holders: int = 1, limit: int | None = None, progress_interval: float = 10.0,
                  tag: str = "pseudolabel", num_classes: int | None = None) -> dict:
    """Write the items of SOURCE not yet under `output` through the dataset ``graph(items, counter)`` builds.

    The driver skeleton every Parquet-writing job shares, with nothing on the driver
    that grows with the collection: clear what a killed run left, read the input with
    Ray Data, drop ids already written and mark repeated ones inside the dataset
    (``wsss_ray.inputs``), write atomically with a progress line, and count what this
    run (`run_id`) wrote. The graph's last stage calls ``count_rows(counter, n)`` for
    each batch it finishes, which is what the progress line shows; its costly stages
    call ``count_attempt`` as they start a batch, so the summary's ``retried_batches``
    says how many batches ran again after a failure (a lost node, a dead actor). Work flows in
    blocks of :func:`block_rows` (up to `rows_per_file`, fewer when the input is small
    for its `holders` actors); the output is written in files of `rows_per_file`
    rows. The summary's ``truth`` is the number of input items with a ground-truth mask.

    With `num_classes`, the summary also has the output's ``miou`` against the ground
    truth. The last stage reports each batch's confusion matrix with its rows
    (:func:`batch_confusion`), so when this run wrote the whole output, each batch once,
    the score needs no second pass; otherwise (a resumed output, a retried batch, an
    unreadable mask) :func:`evaluate_output` reads the output again.
    """
    with OutputClaim(output, run_id) as claim:  # one run writes an output at a time
        remove_temporaries(output)
        items, partitions, estimated = read_items(source, limit)
        start = time.time()
        counter = RowCounter.options(scheduling_strategy=on_this_node()).remote()
        sink = AtomicParquetSink(output, run_id)
        with Progress(counter, partitions, progress_interval, tag=tag):
            todo = pending(items, partitions, parquet_files(output),
                           block_rows(estimated, batch_size, rows_per_file, holders), counter)
            # Files of rows_per_file rows (the unit of resume) gather the blocks that left the last stage.
            try:
                graph(todo, counter).repartition(target_num_rows_per_block=rows_per_file).write_datasink(sink)
            except ray.exceptions.ActorDiedError as e:
                raise killed_by(ray.get(counter.suspected.remote()), e) from e
        remove_temporaries(output)  # left by write tasks of nodes lost mid-run (their retries wrote the rows)
    counts = ray.get(counter.counts.remote())
    confusion, scored = ray.get(counter.scores.remote())
    retried = ray.get(counter.retried.remote())
    ray.kill(counter)
    seconds = round(time.time() - start, 2)
    rate = round(sink.counts["rows"] / seconds, 2) if seconds else None
    summary = {**sink.counts, "skipped": counts["skipped"], "truth": counts["truth"], "output": output,
               "run_id": run_id, "seconds": seconds, "rows_per_s": rate, "retried_batches": retried,
               "took_over": claim.took_over}
    if num_classes is not None:
        whole = counts["skipped"] == 0 and counts["done"] == sink.counts["rows"] and scored == counts["truth"]
        summary["miou"] = (round(scores(confusion).miou, 4) if whole and confusion is not None and confusion.any()
                           else evaluate_output(output, source, num_classes, counts["truth"]))
    return summary


# ------------------------------------------------------------------ reading results


def output_overlays(output: str, n: int = 8) -> np.ndarray | None:
    """The first n ok rows of an output as one image over pseudo-mask grid (None if no ok rows).

    Reads one file at a time and stops at n rows, whatever the size of the output.
    """
    from wsss_ray.masks import overlay_grid

    fs, files = parquet_files(output)
    rows: list[dict] = []
    for path in files:
        table = pq.read_table(path, filesystem=fs, columns=["image", "status", "mask"])
        rows += [r for r in table.filter(pc.equal(table.column("status"), "ok")).to_pylist()][:n - len(rows)]
        if len(rows) == n:
            break
    return overlay_grid([(load_image(r["image"]), decode_png(r["mask"])) for r in rows]) if rows else None


PAIR_SCHEMA = pa.schema([("id", pa.string()), ("truth", pa.string()), ("status", pa.string()),
                         ("mask", pa.binary())])
ROWS_PER_EVALUATION_PARTITION = 2_000


def confusion_block(table: pa.Table, num_classes: int) -> dict:
    """One partition of ground-truth rows (``truth``) and written rows (``status``, ``mask``) -> its confusion matrix.

    Each id's ground truth meets its written rows here (a partition holds every row of
    its ids); error rows count as all background, so a failing labeller cannot look better.
    """
    has_truth = pc.is_valid(table.column("truth"))
    truth = table.filter(has_truth).select(["id", "truth"])
    written = table.filter(pc.invert(has_truth)).select(["id", "status", "mask"])

    joined = truth.join(written, "id", join_type="inner").to_pylist()
    return {"confusion": accumulate(truth_pairs((r["truth"], r["status"], r["mask"]) for r in joined),
                                    num_classes)[None]}


def evaluate_output(output: str, source: str, num_classes: int, truth: int) -> float | None:
    """mIoU of the masks under `output` against the ground truth of SOURCE's items (None without any).

    The input's mask paths and the output's rows meet by id in a hash shuffle (about
    2,000 of the `truth` items with masks per partition); each partition's confusion
    matrix is computed where it is, and only the matrices come back to be summed.
    Every output row with ground truth counts, whatever subset (``--limit``) a run took.
    """
    fs, files = parquet_files(output)
    if not files or not truth:
        return None
    items, input_partitions, _ = read_items(source)

    def truth_rows(table: pa.Table) -> pa.Table:
        table = table.filter(pc.and_(pc.is_valid(table.column("mask")), pc.equal(table.column("status"), "ok")))
        n = table.num_rows
        return pa.table({"id": table.column("id"), "truth": table.column("mask"), "status": pa.nulls(n, pa.string()),
                         "mask": pa.nulls(n, pa.binary())}, schema=PAIR_SCHEMA)

    def written_rows(table: pa.Table) -> pa.Table:
        return pa.table({"id": table.column("id"), "truth": pa.nulls(table.num_rows, pa.string()),
                         "status": table.column("status"), "mask": table.column("mask")}, schema=PAIR_SCHEMA)

    written = ray.data.read_parquet(files, filesystem=fs).select_columns(["id", "status", "mask"])
    both = items.map_batches(truth_rows, batch_format="pyarrow", batch_size=None).union(
        written.map_batches(written_rows, batch_format="pyarrow", batch_size=None))
    partitions = max(input_partitions, math.ceil(truth / ROWS_PER_EVALUATION_PARTITION))
    blocks = both.repartition(partitions, keys=["id"]).map_batches(
        confusion_block, fn_kwargs={"num_classes": num_classes}, batch_format="pyarrow", batch_size=None)
    hist = np.zeros((num_classes, num_classes), np.int64)
    for batch in blocks.iter_batches(batch_size=None, batch_format="numpy"):
        hist += batch["confusion"].sum(0)
    return round(scores(hist).miou, 4) if hist.any() else None
