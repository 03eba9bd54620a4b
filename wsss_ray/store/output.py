"""An output folder of Parquet rows: its schema, reading it, and scoring its masks (no Ray).

The output contract (docs/DESIGN.md) is :data:`OUTPUT_SCHEMA`: one row per input
item, ``ok`` or ``error``, in files ``part-*.parquet`` written whole or not at all.
Readers here take one file at a time (:func:`iter_output`), so reading an output
costs the memory of a file, whatever the number of rows; the export and the review
tools use them without Ray.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from wsss_ray.store.claim import CLAIM_PREFIX
from wsss_ray.store.files import atomic_write, is_temporary, list_files
from wsss_ray.masks import decode_png
from wsss_ray.metrics import accumulate
from wsss_ray.store.sources import load_image, load_mask


# The output contract, column by column: (name, type, what it holds). The descriptions travel in
# the Parquet files' schema (field metadata ``description``) and make the documentation's reference.
COLUMNS = [
    ("id", pa.string(), "The item's id, from the source; unique in an output."),
    ("image", pa.string(), "The image's path or URI."),
    ("labels", pa.list_(pa.string()),
     "The image-level labels used: the input's, or the tagger's (see labels_source)."),
    ("width", pa.int32(), "The (upright, EXIF orientation applied) image's width in pixels."),
    ("height", pa.int32(), "The image's height in pixels."),
    ("mask", pa.binary(),
     "A single-channel 8-bit PNG of the image's size: the full per-pixel argmax, 0 background, i the i-th "
     "class of the labelset (no 255); null on error."),
    ("confidence", pa.binary(),
     "An 8-bit PNG of the image's size: 0..255 is the argmax class's probability; null on error. Thresholds "
     "are applied by its users (CGL training's cgl_threshold, export --min-confidence)."),
    ("status", pa.string(), "ok or error."),
    ("error", pa.string(),
     "One sentence saying what went wrong and what to do; null when ok, except a note on an ok row whose "
     "proposed label set is empty (its mask is all background)."),
    ("labelset", pa.string(), "The labelset the run used (--labelset)."),
    ("model", pa.string(), "The CLIP model spec the run used (--model); in prediction outputs, the checkpoint."),
    ("method", pa.string(), "The CAM method the run used (--method); in prediction outputs, segnet (the trained segmenter)."),
    ("run_id", pa.string(), "The run that wrote the row: its MLflow run id when tracked."),
    ("quality", pa.float32(),
     "How likely the mask is right, in [0, 1], higher is better: an estimate of its mIoU against the true "
     "mask, made without ground truth (post.quality); null on error and in prediction outputs."),
    ("label_quality", pa.list_(pa.float32()),
     "The same estimate for each entry of labels, in order (that label's IoU); null on error."),
    ("labels_source", pa.string(),
     "given (the input's labels) or predicted (the tagger's, --labels missing or auto); null where an item "
     "without labels failed before the tagger ran, and in prediction outputs."),
    ("label_scores", pa.list_(pa.float32()),
     "The tagger's score of each entry of labels, in order, when it proposed them; else null."),
]
OUTPUT_SCHEMA = pa.schema([pa.field(name, kind, metadata={"description": text}) for name, kind, text in COLUMNS])


def parquet_files(output: str) -> tuple[pafs.FileSystem, list[str]]:
    """The complete Parquet files under `output` (hidden and temporary names skipped), sorted."""
    fs, infos = list_files(output)  # sorted by path
    return fs, [i.path for i in infos if i.base_name.endswith(".parquet") and not i.base_name.startswith((".", "_"))]

def read_output(output: str, columns: list[str] | None = None) -> pa.Table | None:
    """The complete Parquet files under `output` (local or URI) as one table (None before the first)."""
    fs, files = parquet_files(output)
    if not files:
        return None
    # OUTPUT_SCHEMA, not the first file's: files written before a column existed read it as null
    return pads.dataset(files, format="parquet", filesystem=fs, schema=OUTPUT_SCHEMA).to_table(columns=columns)

def iter_output(output: str, columns: list[str] | None = None, batch_rows: int = 256) -> Iterator[pa.RecordBatch]:
    """The rows under `output`, `batch_rows` at a time, file by file: the memory of one batch
    of rows, whatever the size of the output.

    A column of OUTPUT_SCHEMA that a file predates (``quality``, ``label_quality``, ``labels_source``
    and ``label_scores`` are later) comes
    back null, so outputs written by earlier versions read as they are.
    """
    fs, files = parquet_files(output)
    for path in files:
        with fs.open_input_file(path) as f:
            parquet = pq.ParquetFile(f)
            present = set(parquet.schema_arrow.names)
            wanted = columns or parquet.schema_arrow.names
            missing = [c for c in wanted if c not in present and c in OUTPUT_SCHEMA.names]
            for batch in parquet.iter_batches(batch_size=batch_rows, columns=[c for c in wanted if c not in missing]):
                if missing:
                    arrays = {c: batch.column(c) for c in batch.schema.names}
                    arrays.update({c: pa.nulls(batch.num_rows, OUTPUT_SCHEMA.field(c).type) for c in missing})
                    batch = pa.RecordBatch.from_pydict({c: arrays[c] for c in wanted})
                yield batch


def output_overlays(output: str, n: int = 8, height: int | None = None) -> np.ndarray | None:
    """The first n ok rows of an output as one image over pseudo-mask grid (None if no ok rows),
    each image scaled to `height` pixels when given (its mask with it, nearest neighbour).

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
    pairs = [(load_image(r["image"]), decode_png(r["mask"])) for r in rows]
    if height is not None:
        pairs = [_scaled(image, mask, height) for image, mask in pairs]
    return overlay_grid(pairs) if pairs else None


def _scaled(image: np.ndarray, mask: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    size = (max(1, round(image.shape[1] * height / image.shape[0])), height)
    return (np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR)),
            np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST)))


OVERVIEW_SUFFIX = "-overview.png"


def overview_path(output: str) -> str:
    """Where a job puts its overview image: beside the output folder, not among its rows
    (``outputs/pseudolabels`` -> ``outputs/pseudolabels-overview.png``)."""
    return output.rstrip("/") + OVERVIEW_SUFFIX


def write_overview(output: str, n: int = 8, height: int = 160) -> str | None:
    """Write the first `n` masks of `output` over their images (:func:`output_overlays`) as a PNG
    at :func:`overview_path`, atomically; returns its path, None when the output has no ok row."""
    import io

    from PIL import Image

    grid = output_overlays(output, n, height)
    if grid is None:
        return None
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    return atomic_write(overview_path(output), buf.getvalue())


def remove_temporaries(output: str) -> None:
    """Drop the half-written files of a killed run (one job writes to an output at a time).

    Claims' own temporaries are left to the claims: this run's heartbeat may be writing one.
    """
    fs, infos = list_files(output)
    for info in infos:
        if is_temporary(info.base_name) and not info.base_name.startswith(f".{CLAIM_PREFIX}"):
            with contextlib.suppress(FileNotFoundError):  # moved into place since the listing
                fs.delete_file(info.path)

def truth_pairs(rows: Iterable[tuple[str, str, bytes | None]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ground truth, written mask) for (truth path, status, mask PNG) rows; an error row is all background,
    so a failing labeller cannot look better."""
    for truth, status, mask in rows:
        gt = load_mask(truth)
        yield gt, decode_png(mask) if status == "ok" else np.zeros_like(gt)

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

PAIR_SCHEMA = pa.schema([("id", pa.string()), ("truth", pa.string()), ("status", pa.string()),
                         ("mask", pa.binary())])

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
