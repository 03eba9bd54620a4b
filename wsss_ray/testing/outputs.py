"""Small labelling-job outputs written directly (no Ray, no model): known masks under known ids,
for the export, review and round-trip tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from wsss_ray.masks import encode_png
from wsss_ray.store import OUTPUT_SCHEMA
from wsss_ray.toyworld import CLASSES


def toy_output(folder: Path, masks: dict[str, np.ndarray], status: dict[str, str] | None = None,
               quality: dict[str, float] | None = None, images: Path | None = None) -> Path:
    """An output folder (one Parquet file) of toyworld rows with these masks (id -> HxW uint8).

    Each row's image is a black PNG written under `images` (default: ``folder/../images``);
    its labels are the classes in its mask (``cow`` for an empty one); confidence 250
    everywhere; ``quality`` from `quality` (default 0.5) and ``label_quality`` 0.25, 0.75, ...
    per label; rows named in `status` as ``error`` have no mask.
    """
    images = images or folder.parent / "images"
    folder.mkdir(parents=True)
    rows = []
    for row_id, mask in masks.items():
        image = images / f"{row_id}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((*mask.shape, 3), np.uint8)).save(image)
        labels = [CLASSES[v - 1] for v in np.unique(mask) if 0 < v < 255] or ["cow"]
        ok = (status or {}).get(row_id, "ok") == "ok"
        rows.append({"id": row_id, "image": str(image), "labels": labels, "width": mask.shape[1],
                     "height": mask.shape[0], "mask": encode_png(mask) if ok else None,
                     "confidence": encode_png(np.full(mask.shape, 250, np.uint8), palette=False) if ok else None,
                     "status": "ok" if ok else "error", "error": None if ok else "labelling failed",
                     "labelset": "toyworld", "model": "toyclip", "method": "clip-es", "run_id": "run-1",
                     "quality": (quality or {}).get(row_id, 0.5) if ok else None,
                     "label_quality": [0.25 + 0.5 * k for k in range(len(labels))] if ok else None})
    pq.write_table(pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA), folder / "part-0.parquet")
    return folder
