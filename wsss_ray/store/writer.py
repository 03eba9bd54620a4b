"""The driver skeleton every Parquet-writing job shares: claim, resume, write atomically, count, score.

:func:`write_pending` is the labelling job's and prediction's driver: it claims the
output (``wsss_ray.store.claim``), clears what a killed run left, reads the input with Ray
Data and drops ids already written inside the dataset (``wsss_ray.store.inputs``), runs the
job's graph, and writes its rows through :class:`AtomicParquetSink` with a progress
line (``wsss_ray.progress``). Nothing on the driver grows with the collection.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from ray.data import Datasink
from ray.data.block import BlockAccessor

from wsss_ray.store.claim import OutputClaim, claim_stands
from wsss_ray.store.files import atomic_write, filesystem
from wsss_ray.store.inputs import pending, read_items
from wsss_ray.metrics import scores
from wsss_ray.store.output import PAIR_SCHEMA, confusion_block, parquet_files, remove_temporaries
from wsss_ray.progress import Progress, RowCounter, killed_by, on_this_node


LABELS_SOURCES = ("given", "predicted")  # the values of the labels_source column
COUNTS = ("rows", "ok", "errors", *(f"labels_{v}" for v in LABELS_SOURCES))


class AtomicParquetSink(Datasink):
    """One Parquet file per write task, made visible only once complete.

    Files are written through :func:`wsss_ray.store.files.atomic_write`, so a killed job
    never leaves a half-written file that a re-run would read. The name is a hash of
    the ids it holds, so a retried write task replaces its own file instead of
    duplicating rows. With `run_id`, a file is moved into place only while that run's
    claim on the output stands (``wsss_ray.store.claim``): a write task that outlives its
    killed driver cannot add rows that the run taking over writes too.
    """

    def __init__(self, output: str, run_id: str | None = None):
        self.output, self.run_id = output, run_id
        self.counts = dict.fromkeys(COUNTS, 0)

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
            return dict.fromkeys(COUNTS, 0)
        table = pa.concat_tables(tables)
        digest = hashlib.sha1("\n".join(sorted(table.column("id").to_pylist())).encode()).hexdigest()[:20]
        atomic_write(f"{self.output.rstrip('/')}/part-{digest}.parquet",
                     lambda fs, tmp: pq.write_table(table, tmp, filesystem=fs), check=self._claim_stands)
        ok = pc.sum(pc.equal(table.column("status"), "ok")).as_py() or 0
        source = table.column("labels_source") if "labels_source" in table.column_names else pa.nulls(0, pa.string())
        return {"rows": table.num_rows, "ok": ok, "errors": table.num_rows - ok,
                **{f"labels_{v}": pc.sum(pc.equal(source, v)).as_py() or 0 for v in LABELS_SOURCES}}

    def on_write_complete(self, write_result) -> None:
        """Sum what this run's write tasks wrote (on the driver, once every task has succeeded)."""
        for returned in write_result.write_returns:
            for key in self.counts:
                self.counts[key] += returned[key]

class ClaimLost(RuntimeError):
    """This run's claim on its output was taken over; its writes stop."""

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
    (``wsss_ray.store.inputs``), write atomically with a progress line, and count what this
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
    tags = ray.get(counter.tag_scores.remote())
    retried = ray.get(counter.retried.remote())
    ray.kill(counter)
    seconds = round(time.time() - start, 2)
    rate = round(sink.counts["rows"] / seconds, 2) if seconds else None
    summary = {**sink.counts, "skipped": counts["skipped"], "truth": counts["truth"], "output": output,
               "run_id": run_id, "seconds": seconds, "rows_per_s": rate, "retried_batches": retried,
               "took_over": claim.took_over, **tags}
    if not any(summary[f"labels_{v}"] for v in LABELS_SOURCES):  # a job that writes no labels_source (predict)
        for v in LABELS_SOURCES:
            del summary[f"labels_{v}"]
    if num_classes is not None:
        whole = counts["skipped"] == 0 and counts["done"] == sink.counts["rows"] and scored == counts["truth"]
        summary["miou"] = (round(scores(confusion).miou, 4) if whole and confusion is not None and confusion.any()
                           else evaluate_output(output, source, num_classes, counts["truth"]))
    return summary

ROWS_PER_EVALUATION_PARTITION = 2_000

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
