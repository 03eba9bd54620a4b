"""The rows every Parquet-writing job shares: items in, decoded batches, Parquet out.

The output contract (docs/DESIGN.md) is :data:`OUTPUT_SCHEMA`: one row per input
item, ``ok`` or ``error``. Both the labelling job (``wsss_ray.pipeline``) and
prediction (``wsss_ray.train.predict``) build their Ray Data graphs from the same
pieces here: the driver skeleton :func:`write_pending` (clear what a killed run
left, skip ids already written, write atomically with a progress line, count what
this run wrote), the decode stage, the row builders and the atomic sink, and the
readers of a finished output (:func:`read_output`, :func:`evaluate_output`).
"""

from __future__ import annotations

import hashlib
import math
import sys
import threading
import time
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
from ray.data import Datasink
from ray.data.block import BlockAccessor

from wsss_ray.files import atomic_write, filesystem, is_temporary, read_bytes
from wsss_ray.masks import decode_png, encode_png
from wsss_ray.metrics import accumulate, scores
from wsss_ray.sources import Item, decode_image, load_image, load_mask

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


def decode_stage(batch: dict, max_pixels: int) -> dict:
    """Read and decode each image (CPU task) into ``pixels``; a failure becomes an error row."""
    batch = writable_batch(batch)
    pixels = []
    for i in range(len(batch["id"])):
        try:
            if batch["status"][i] != "ok":
                raise ValueError(batch["error"][i])
            pixels.append(decode_image(read_bytes(batch["image"][i]), max_pixels))
        except Exception as e:  # noqa: BLE001 - any failure of one item is that item's error row
            if batch["status"][i] == "ok":
                mark_error(batch, i, f"cannot read image {batch['image'][i]}: {type(e).__name__}: {e}")
            pixels.append(np.zeros((1, 1, 3), np.uint8))
    batch["pixels"] = objects(pixels)
    batch["height"] = np.array([p.shape[0] for p in pixels], np.int32)
    batch["width"] = np.array([p.shape[1] for p in pixels], np.int32)
    return batch


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
            mark_error(batch, i, f"{step} failed: {type(e).__name__}: {e}")
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
    duplicating rows.
    """

    def __init__(self, output: str):
        self.output = output

    def on_write_start(self, schema=None) -> None:
        fs, path = filesystem(self.output)
        fs.create_dir(path, recursive=True)

    def write(self, blocks, ctx) -> int:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return 0
        table = pa.concat_tables(tables)
        digest = hashlib.sha1("\n".join(sorted(table.column("id").to_pylist())).encode()).hexdigest()[:20]
        atomic_write(f"{self.output.rstrip('/')}/part-{digest}.parquet",
                     lambda fs, tmp: pq.write_table(table, tmp, filesystem=fs))
        return table.num_rows


def _files(output: str) -> tuple[pafs.FileSystem, list[pafs.FileInfo]]:
    """The files directly under `output` (none before it exists)."""
    fs, path = filesystem(output)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return fs, []
    return fs, [i for i in fs.get_file_info(pafs.FileSelector(path)) if i.type == pafs.FileType.File]


def parquet_files(output: str) -> tuple[pafs.FileSystem, list[str]]:
    """The complete Parquet files under `output` (hidden and temporary names skipped), sorted."""
    fs, infos = _files(output)
    return fs, sorted(i.path for i in infos if i.base_name.endswith(".parquet")
                      and not i.base_name.startswith((".", "_")))


def read_output(output: str, columns: list[str] | None = None) -> pa.Table | None:
    """The complete Parquet files under `output` (local or URI) as one table (None before the first)."""
    fs, files = parquet_files(output)
    if not files:
        return None
    return pads.dataset(files, format="parquet", filesystem=fs).to_table(columns=columns)


def existing_ids(output: str) -> set[str]:
    """Ids already written under `output` (empty when there is no output yet)."""
    table = read_output(output, ["id"])
    return set() if table is None else set(table.column("id").to_pylist())


def remove_temporaries(output: str) -> None:
    """Drop the half-written files of a killed run (one job writes to an output at a time)."""
    fs, infos = _files(output)
    for info in infos:
        if is_temporary(info.base_name):
            fs.delete_file(info.path)


@ray.remote(num_cpus=0)
class RowCounter:
    """Rows that have left a job's last stage: the stage adds each batch's rows as it finishes it."""

    def __init__(self):
        self.rows = 0

    def add(self, rows: int) -> None:
        self.rows += rows

    def total(self) -> int:
        return self.rows


def count_rows(counter, rows: int) -> None:
    """Tell a job's :class:`RowCounter` (if any) that `rows` rows left its last stage; never waits."""
    if counter is not None:
        counter.add.remote(rows)


class Progress:
    """Prints ``rows done/total, rows/s, ETA`` every `interval` seconds while a run writes.

    It counts rows as they leave the job's last stage (``counter``, a :class:`RowCounter`
    that stage reports to), so the line moves batch by batch however many rows a Parquet
    file holds. A batch retried after a failure counts twice, so the line never shows
    more than `total`; the job's summary counts the written files exactly.
    """

    def __init__(self, counter, total: int, interval: float = 10.0, stream=sys.stderr, tag: str = "pseudolabel"):
        self.counter, self.total, self.interval, self.stream, self.tag = counter, total, interval, stream, tag
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="wsss-ray-progress")
        self.start = time.time()

    def __enter__(self) -> "Progress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def rows_done(self) -> int:
        return min(self.total, ray.get(self.counter.total.remote(), timeout=self.interval))

    def line(self) -> str:
        done, elapsed = self.rows_done(), time.time() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = f"{(self.total - done) / rate:.0f} s" if rate > 0 else "unknown"
        pct = 100 * done / self.total if self.total else 100
        return f"[{self.tag}] {done}/{self.total} rows ({pct:.0f}%), {rate:.2f} rows/s, ETA {eta}"

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                print(self.line(), file=self.stream, flush=True)
            except (ray.exceptions.RayError, TimeoutError):  # a busy or restarting counter: the next tick
                pass


# ------------------------------------------------------------------ the driver skeleton


def pending_rows(items: list[Item], done: set[str]) -> list[dict]:
    """Input rows for the items not in `done`; a repeated id becomes an error row."""
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
    """The driver's rows as a dataset of `rows_per_file`-row blocks (one Parquet file each)."""
    return ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / rows_per_file)))


def run_counts(output: str, run_id: str) -> dict:
    """Rows, ok rows and error rows that the run `run_id` wrote under `output`."""
    table = read_output(output, ["status", "run_id"])
    statuses = [] if table is None else [
        s for s, r in zip(table.column("status").to_pylist(), table.column("run_id").to_pylist()) if r == run_id]
    return {"rows": len(statuses), "ok": statuses.count("ok"), "errors": statuses.count("error")}


def write_pending(items: list[Item], output: str, run_id: str, graph: Callable[[list[dict], Any], ray.data.Dataset],
                  progress_interval: float = 10.0, tag: str = "pseudolabel") -> dict:
    """Write the items not yet under `output` through the dataset ``graph(rows, counter)`` builds.

    The driver skeleton every Parquet-writing job shares: clear what a killed run left,
    skip ids already written, write atomically with a progress line, and count what
    this run (`run_id`) wrote. The graph's last stage calls ``count_rows(counter, n)``
    for each batch it finishes, which is what the progress line shows.
    """
    remove_temporaries(output)
    rows = pending_rows(items, existing_ids(output))
    start = time.time()
    summary = {"rows": 0, "ok": 0, "errors": 0, "skipped": len(items) - len(rows), "output": output,
               "run_id": run_id}
    if rows:
        counter = RowCounter.remote()
        with Progress(counter, len(rows), progress_interval, tag=tag):
            graph(rows, counter).write_datasink(AtomicParquetSink(output))
        ray.kill(counter)
        summary.update(run_counts(output, run_id))
    summary["seconds"] = round(time.time() - start, 2)
    summary["rows_per_s"] = round(summary["rows"] / summary["seconds"], 2) if summary["seconds"] else None
    return summary


# ------------------------------------------------------------------ reading results


def output_overlays(output: str, n: int = 8) -> np.ndarray | None:
    """The first n ok rows of an output as one image over pseudo-mask grid (None if no ok rows)."""
    from wsss_ray.masks import overlay_grid

    table = read_output(output, ["image", "status", "mask"])
    rows = [] if table is None else [r for r in table.to_pylist() if r["status"] == "ok"][:n]
    return overlay_grid([(load_image(r["image"]), decode_png(r["mask"])) for r in rows]) if rows else None


def evaluate_output(output: str, items: list[Item], num_classes: int) -> float | None:
    """mIoU of the written masks against the items' ground truth (None without any).

    Error rows count as all background, so a failing labeller cannot look better.
    """
    gt = {it.id: it.mask for it in items if it.mask}
    table = read_output(output, ["id", "status", "mask"])
    if not gt or table is None:
        return None

    def pairs():
        for batch in table.to_batches():
            for row in batch.to_pylist():
                if row["id"] in gt:
                    truth = load_mask(gt.pop(row["id"]))
                    yield truth, decode_png(row["mask"]) if row["status"] == "ok" else np.zeros_like(truth)

    return round(scores(accumulate(pairs(), num_classes)).miou, 4)
