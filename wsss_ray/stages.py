"""What a job's stages do to a batch of rows, without Ray: decode, mark errors, build output rows.

A batch is a dict of columns (Ray Data's numpy format). An item whose step fails
becomes an ``error`` row with one sentence (:func:`failure`), and the rest of the
batch goes on.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa

from wsss_ray.store import read_bytes
from wsss_ray.masks import encode_png
from wsss_ray.store import OUTPUT_SCHEMA
from wsss_ray.store import decode_within


def writable_batch(batch: dict) -> dict:
    """Ray hands batches over zero-copy (read-only); stages write status/error per row."""
    batch["status"] = np.array(batch["status"], dtype=object)
    # An all-null column arrives as float NaN; errors are strings or None.
    batch["error"] = np.array([e if isinstance(e, str) else None for e in batch["error"]], dtype=object)
    # Lists, not numpy string arrays: ragged arrays would make Ray try (and fail) a tensor column.
    # None: the item's labels are not known (the tagger may propose them).
    batch["labels"] = lists(batch["labels"], str)
    return batch

def lists(column, kind: type = str) -> np.ndarray:
    """A column of lists (or nulls) as an object array of Python lists of `kind`, or None where null
    (Ray hands an all-null column over as float NaN)."""
    return objects([[kind(v) for v in value] if isinstance(value, (list, tuple, np.ndarray)) else None
                    for value in column])

def strings(column) -> list:
    """A column of strings (or nulls) as a list, None where null."""
    return [v if isinstance(v, str) else None for v in column]

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

def together_or_alone(batch: dict, rows: list[int], step_fn: Callable[[list[int]], list], step: str) -> list:
    """``step_fn(rows)`` (one result per row) for the rows together; if that raises, one row at a
    time, and a row that raises alone becomes an error row (its result None)."""
    try:
        return step_fn(rows) if rows else []
    except Exception as e:  # noqa: BLE001 - one item's failure is that item's error row
        if len(rows) == 1:
            mark_error(batch, rows[0], failure(step, e))
            return [None]
    return [r for i in rows for r in together_or_alone(batch, [i], step_fn, step)]

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

def png_rows(batch: dict, make: Callable[[int], tuple], step: str) -> list:
    """(mask PNG, confidence PNG, *scores) from ``make(i)`` = (mask, confidence, *scores)
    for each ok row, None elsewhere; the scores are the ``quality`` and ``label_quality`` columns, if any.

    A row whose `step` raises becomes that row's error; the others go on.
    """
    out: list[tuple | None] = [None] * len(batch["id"])
    for i in range(len(out)):
        if batch["status"][i] != "ok":
            continue
        try:
            mask, conf, *scores = make(i)
            out[i] = (encode_png(mask), encode_png(conf, palette=False), *scores)
        except Exception as e:  # noqa: BLE001 - one item's failure is that item's error row
            mark_error(batch, i, failure(step, e))
    return out

def output_table(batch: dict, pngs: list, *, labelset: str | None, model: str, method: str, run_id: str
                 ) -> pa.Table:
    """A batch and its (mask PNG, confidence PNG[, quality, label_quality]) per row as rows of OUTPUT_SCHEMA;
    ``labels_source`` and ``label_scores`` from the batch's columns of those names when it has them."""
    n = len(batch["id"])

    def column(k: int) -> list:
        return [p[k] if p and len(p) > k else None for p in pngs]

    scores = list(lists(batch["label_scores"], float)) if "label_scores" in batch else [None] * n

    return pa.table({
        "id": [str(x) for x in batch["id"]],
        "image": [str(x) for x in batch["image"]],
        "labels": list(batch["labels"]),
        "width": batch["width"], "height": batch["height"],
        "mask": column(0), "confidence": column(1),
        "status": list(batch["status"]), "error": list(batch["error"]),
        "labelset": [labelset] * n, "model": [model] * n, "method": [method] * n, "run_id": [run_id] * n,
        "quality": column(2), "label_quality": column(3),
        "labels_source": strings(batch.get("labels_source", [None] * n)), "label_scores": scores,
    }, schema=OUTPUT_SCHEMA)

