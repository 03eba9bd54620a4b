"""Reviewed masks: a person's corrections, stored beside the pseudo-masks they replace (no Ray).

They live in ``OUTPUT/_reviewed/`` as Parquet files of :data:`REVIEW_SCHEMA`, one file per
import, named by a hash of what it holds: writing the same reviews again is a no-op, and
each file appears whole or not at all. The labelling job lists only the files directly in
its output and never touches this folder. When several reviews name one id, the latest
(``reviewed_at``, then the file name) is the one that counts.
"""

from __future__ import annotations

import hashlib
import posixpath
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from wsss_ray.store.files import atomic_write, filesystem, list_files
from wsss_ray.masks import encode_png

REVIEWED_DIR = "_reviewed"
REVIEW_SCHEMA = pa.schema([
    ("id", pa.string()), ("mask", pa.binary()), ("width", pa.int32()), ("height", pa.int32()),
    ("reviewer", pa.string()), ("reviewed_at", pa.string()), ("source", pa.string()),
])


def reviewed_folder(output: str) -> str:
    return posixpath.join(output.rstrip("/"), REVIEWED_DIR)


def write_reviews(output: str, reviews: Iterable[dict]) -> tuple[str, bool]:
    """Store `reviews` (dicts with ``id``, ``mask`` (HxW uint8), ``reviewer``, ``reviewed_at``,
    ``source``) as one file under `output`; returns (its path, whether it is new)."""
    rows = sorted(({**r, "mask": encode_png(np.asarray(r["mask"], np.uint8))} for r in reviews),
                  key=lambda r: (r["id"], r["reviewed_at"]))
    if not rows:
        raise ValueError("there are no reviewed masks to store")
    digest = hashlib.sha256()
    for r in rows:  # what was reviewed, by whom and when; not the path it was imported from
        for part in (r["id"], r["reviewer"], r["reviewed_at"]):
            digest.update(str(part).encode() + b"\0")
        digest.update(r["mask"])
    path = posixpath.join(reviewed_folder(output), f"part-{digest.hexdigest()[:20]}.parquet")
    fs, local = filesystem(path)
    if fs.get_file_info(local).type != pafs.FileType.NotFound:
        return path, False
    table = pa.table({
        "id": [r["id"] for r in rows], "mask": [r["mask"] for r in rows],
        "width": [int(r["width"]) for r in rows], "height": [int(r["height"]) for r in rows],
        "reviewer": [r["reviewer"] for r in rows], "reviewed_at": [r["reviewed_at"] for r in rows],
        "source": [r["source"] for r in rows],
    }, schema=REVIEW_SCHEMA)
    atomic_write(path, lambda fs_, tmp: pq.write_table(table, tmp, filesystem=fs_))
    return path, True


def reviewed_masks(output: str, columns: tuple[str, ...] = ("mask",)) -> dict[str, dict]:
    """The latest review of each id under `output`: ``{id: {column: value}}`` ({} when none).

    Held in memory: reviews are what people made by hand (a 500x375 mask is a few KB as PNG).
    """
    fs, infos = list_files(reviewed_folder(output))
    latest: dict[str, tuple] = {}
    for info in infos:
        if not info.base_name.endswith(".parquet") or info.base_name.startswith((".", "_")):
            continue
        table = pq.read_table(info.path, filesystem=fs, columns=["id", "reviewed_at", *columns])
        for row in table.to_pylist():
            key = (row["reviewed_at"], info.base_name)
            if row["id"] not in latest or key > latest[row["id"]][0]:
                latest[row["id"]] = (key, {c: row[c] for c in columns})
    return {i: v for i, (_, v) in latest.items()}
