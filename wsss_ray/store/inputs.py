"""A collection as a Ray Dataset: read in parallel, resumed and de-duplicated inside the dataset.

A job's driver never holds the collection. :func:`read_items` turns a SOURCE into
a dataset of item rows (:data:`ITEM_SCHEMA`), and :func:`pending` keeps the rows a
run still has to write:

- **Manifests** (a ``.jsonl`` or ``.parquet`` file, or a folder of such shards, local
  or on object storage) are read by Ray Data read tasks, one or more per shard,
  streaming. A malformed line does not stop the job: it becomes an error row whose
  message names the file and line (its id is the line's id when it has one, else
  ``FILE:LINE``), like any other bad item.
- **Image folders, VOC and COCO** are listed by one Ray task off the driver (a COCO
  annotation file is one JSON document); the dataset takes its table by reference.
- **Resume and repeated ids** are one hash shuffle by id: the input rows and the ids
  already in the output (read from the output's Parquet files, column ``id`` only)
  meet in the same partition, where ids already written are dropped and every
  occurrence of an id after the first (in file and line order) becomes an error row.
  No process ever holds all ids; the shuffle is a barrier, so labelling starts once
  the input has been read and partitioned.
"""

from __future__ import annotations

import math
import posixpath
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
from ray.data.datasource import FileBasedDatasource

from wsss_ray.store.files import filesystem
from wsss_ray.store.sources import Item, ManifestLineError, manifest_item, manifest_shard_paths, read_source

MANIFEST_EXTENSIONS = ("jsonl", "parquet")
ROWS_PER_READ_BLOCK = 65_536
BYTES_PER_PARTITION = 32 << 20       # of manifest per shuffle partition: ~300,000 JSONL lines
ROWS_PER_PARTITION = 300_000

# One row per input item. `source` and `line` say where it came from (duplicates keep the first
# occurrence in that order); `written` marks the ids read back from the output when resuming.
ITEM_SCHEMA = pa.schema([
    ("id", pa.string()), ("image", pa.string()), ("labels", pa.list_(pa.string())), ("mask", pa.string()),
    ("status", pa.string()), ("error", pa.string()), ("source", pa.string()), ("line", pa.int64()),
    ("written", pa.bool_()),
])


def item_table(items: list[Item], source: str, first_line: int = 1) -> pa.Table:
    """Items (all ok) as rows of ITEM_SCHEMA."""
    n = len(items)
    return pa.table({
        "id": [it.id for it in items], "image": [it.image for it in items],
        "labels": [None if it.labels is None else list(it.labels) for it in items], "mask": [it.mask for it in items],
        "status": ["ok"] * n, "error": [None] * n, "source": [source] * n,
        "line": list(range(first_line, first_line + n)), "written": [False] * n,
    }, schema=ITEM_SCHEMA)


class ManifestDatasource(FileBasedDatasource):
    """Manifest shards (JSONL lines or Parquet rows of ``{id, image, labels?, mask?}``) as item rows.

    Relative image and mask paths are taken against the shard's own folder. A line
    that is not a manifest line becomes an error row naming the file and line.
    """

    _FILE_EXTENSIONS = list(MANIFEST_EXTENSIONS)

    def __init__(self, paths: str | list[str], scheme: str | None = None, **kwargs):
        super().__init__(paths, **kwargs)
        self.scheme = scheme  # Ray hands _read_stream paths without their URI scheme

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        uri = f"{self.scheme}://{path}" if self.scheme else path
        records = _parquet_records(f) if path.endswith(".parquet") else _jsonl_records(f)
        rows: list[tuple[int, object]] = []
        for number, record in records:
            rows.append((number, record))
            if len(rows) == ROWS_PER_READ_BLOCK:
                yield _manifest_table(rows, uri)
                rows = []
        if rows:
            yield _manifest_table(rows, uri)


def _jsonl_records(f: pa.NativeFile, chunk: int = 16 << 20) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of a JSONL stream, blank lines skipped, read in chunks."""
    rest, number = b"", 0
    while True:
        data = f.read(chunk)
        lines = (rest + data).split(b"\n")
        rest = lines.pop() if data else b""
        for line in lines:
            number += 1
            if line.strip():
                yield number, line
        if not data:
            return


def _parquet_records(f: pa.NativeFile) -> Iterator[tuple[int, dict]]:
    number = 0
    # Parquet needs random access; Ray opens shards as streams, so the (compressed) shard is read whole.
    for batch in pq.ParquetFile(pa.BufferReader(f.readall())).iter_batches(batch_size=ROWS_PER_READ_BLOCK):
        for record in batch.to_pylist():
            number += 1
            yield number, record


def _manifest_table(rows: list[tuple[int, object]], uri: str) -> pa.Table:
    base = posixpath.dirname(uri)
    cols: dict[str, list] = {name: [] for name in ITEM_SCHEMA.names}
    for number, record in rows:
        try:
            it, status, error = manifest_item(record, base), "ok", None
        except ManifestLineError as e:
            it = Item(e.id or f"{uri}:{number}", "", ())
            status, error = "error", f"{uri}:{number}: {e}"
        labels = None if it.labels is None else list(it.labels)
        for name, value in (("id", it.id), ("image", it.image), ("labels", labels), ("mask", it.mask),
                            ("status", status), ("error", error), ("source", uri), ("line", number),
                            ("written", False)):
            cols[name].append(value)
    return pa.table(cols, schema=ITEM_SCHEMA)


@ray.remote(num_returns=2)
def _listed_items(spec: str) -> tuple[int, pa.Table]:
    items = read_source(spec)
    return len(items), item_table(items, spec)


def read_items(spec: str, limit: int | None = None) -> tuple[ray.data.Dataset, int, int]:
    """(item rows of SOURCE `spec`, shuffle partitions for them, estimated rows); see ``wsss_ray.store.sources``.

    A source that does not exist or cannot be listed is a ValueError here, before
    any image is read; a malformed manifest line is an error row later. Manifests'
    rows are estimated from their bytes and the first shard's bytes per row.
    """
    shards = manifest_shards(spec)
    if shards is not None:
        paths, size = shards
        fs, _ = filesystem(spec)
        scheme = spec.split("://", 1)[0] if "://" in spec else None
        ds = ray.data.read_datasource(ManifestDatasource(paths, scheme=scheme, filesystem=fs))
        partitions = max(1, math.ceil(size / BYTES_PER_PARTITION))
        rows = round(size * _rows_per_byte(fs, paths[0]))
    else:
        count, table = _listed_items.remote(spec)
        try:
            rows = ray.get(count)
        except ray.exceptions.RayTaskError as e:  # the reader's own one-sentence ValueError
            raise e.cause from None
        ds = ray.data.from_arrow_refs([table])
        partitions = max(1, math.ceil(rows / ROWS_PER_PARTITION))
    if limit is not None:
        ds = ds.limit(limit)
        rows = min(rows, limit)
    return ds, partitions, rows


def _rows_per_byte(fs: pafs.FileSystem, path: str, sample: int = 1 << 20) -> float:
    """Rows per byte of a manifest shard: its Parquet footer, or the lines in its first MiB."""
    if path.endswith(".parquet"):
        with fs.open_input_file(path) as f:
            return pq.ParquetFile(f).metadata.num_rows / max(1, f.size())
    with fs.open_input_stream(path) as f:
        head = f.read(sample)
    return head.count(b"\n") / max(1, len(head))


def manifest_shards(spec: str) -> tuple[list[str], int] | None:
    """(shard paths within their filesystem, total bytes) when `spec` is a manifest or a folder of shards, else None."""
    if spec.startswith(("voc:", "coco:")):
        return None
    fs, path = filesystem(spec)
    kind = fs.get_file_info(path).type
    if spec.endswith(tuple(f".{e}" for e in MANIFEST_EXTENSIONS)):
        if kind != pafs.FileType.File:
            raise ValueError(f"manifest {spec} does not exist; check the path")
        shards = [spec]
    elif kind == pafs.FileType.Directory:
        shards = manifest_shard_paths(spec)
    else:
        return None
    if not shards:
        return None
    infos = fs.get_file_info([filesystem(s)[1] for s in shards])
    return [i.path for i in infos], sum(i.size for i in infos)


# ------------------------------------------------------------------ resume and repeated ids


def written_ids(files: list[str], fs: pafs.FileSystem) -> ray.data.Dataset:
    """The ids in an output's Parquet `files` as ITEM_SCHEMA rows marked ``written``."""
    def mark(table: pa.Table) -> pa.Table:
        n = table.num_rows
        return pa.table({"id": table.column("id"), "image": pa.nulls(n, pa.string()),
                         "labels": pa.nulls(n, pa.list_(pa.string())), "mask": pa.nulls(n, pa.string()),
                         "status": pa.nulls(n, pa.string()), "error": pa.nulls(n, pa.string()),
                         "source": pa.nulls(n, pa.string()), "line": pa.nulls(n, pa.int64()),
                         "written": pa.repeat(True, n)}, schema=ITEM_SCHEMA)

    return ray.data.read_parquet(files, filesystem=fs).select_columns(["id"]).map_batches(
        mark, batch_format="pyarrow", batch_size=None)


def pending_block(table: pa.Table, counter=None) -> pa.Table:
    """One shuffle partition (every row of its ids): the rows still to write.

    Rows whose id is already written are dropped; of the rest, every occurrence of
    an id after the first (by source, line) becomes an error row. The counts go to
    the job's ``RowCounter`` (``add_pending``).
    """
    written = pc.fill_null(table.column("written"), False)
    fresh = table.filter(pc.invert(written))
    todo = fresh.filter(pc.invert(pc.is_in(fresh.column("id"), value_set=table.filter(written).column("id"))))
    todo = todo.sort_by([("id", "ascending"), ("source", "ascending"), ("line", "ascending")])
    ids = todo.column("id").to_numpy(zero_copy_only=False)
    repeat = np.zeros(len(ids), bool)
    repeat[1:] = ids[1:] == ids[:-1]
    if repeat.any():
        status = todo.column("status").to_numpy(zero_copy_only=False).copy()
        error = todo.column("error").to_numpy(zero_copy_only=False).copy()
        for i in np.flatnonzero(repeat & (status == "ok")):
            status[i] = "error"
            error[i] = f"duplicate id {ids[i]!r} in the input; ids must be unique"
        todo = todo.set_column(todo.schema.get_field_index("status"), "status", pa.array(status, pa.string()))
        todo = todo.set_column(todo.schema.get_field_index("error"), "error", pa.array(error, pa.string()))
    if counter is not None:
        counter.add_pending.remote(todo.num_rows, fresh.num_rows - todo.num_rows,
                                   fresh.num_rows - fresh.column("mask").null_count)
    return todo.drop_columns(["written"])


def pending(items: ray.data.Dataset, partitions: int, output_files: tuple[pafs.FileSystem, list[str]],
            rows_per_block: int, counter=None) -> ray.data.Dataset:
    """The item rows not yet in the output (``parquet_files(output)``), in blocks of at most `rows_per_block`.

    Blocks of a batch each let Ray Data spread the work over every task and actor.
    """
    fs, files = output_files
    if files:
        items = items.union(written_ids(files, fs))
    return (items.repartition(partitions, keys=["id"])
            .map_batches(pending_block, batch_size=None, batch_format="pyarrow", fn_kwargs={"counter": counter})
            .repartition(target_num_rows_per_block=rows_per_block))


__all__ = ["ITEM_SCHEMA", "ManifestDatasource", "item_table", "manifest_shards", "pending", "pending_block",
           "read_items", "written_ids"]
