"""The Ray Data pseudo-labelling graph: items -> decode -> CLIP CAM -> dense CRF -> Parquet.

Each stage declares what it needs. ``decode`` and ``crf`` are CPU tasks. ``cam``
is a pool of actors that load the model once each and autoscales between the
``concurrency`` bounds; it takes ``num_gpus`` GPUs per actor, so GPUs never wait
on the CRF. A bad item becomes an ``error`` row and never stops the job. Output
files appear atomically, and re-running into the same output skips the ids that
are already written, so a killed job resumes where it stopped.

This module is the only Ray Data caller. The algorithm (``wsss_ray.labeler``)
knows nothing of Ray.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
import threading
import time
import uuid
import warnings
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
from ray.data import Datasink
from ray.data.block import BlockAccessor

from wsss_ray.config import PipelineConfig, params
from wsss_ray.labeler import Labeler, class_ids, refine
from wsss_ray.labelset import load_labelset
from wsss_ray.masks import encode_png
from wsss_ray.sources import Item, decode_image, filesystem, read_bytes, read_source

# The output contract (DESIGN.md): one row per input item, plus run metadata.
OUTPUT_SCHEMA = pa.schema([
    ("id", pa.string()), ("image", pa.string()), ("labels", pa.list_(pa.string())),
    ("width", pa.int32()), ("height", pa.int32()), ("mask", pa.binary()), ("confidence", pa.binary()),
    ("status", pa.string()), ("error", pa.string()),
    ("labelset", pa.string()), ("model", pa.string()), ("method", pa.string()), ("run_id", pa.string()),
])
# A CAM actor that dies (OOM, a lost node) is restarted and its batch retried, a bounded
# number of times: Ray Data's default is unbounded, which turns a poison input into a hang.
# Ray 2.60 offers no other way to pass these and warns that the keyword form goes in 2.64.
ACTOR_RETRIES = {"max_restarts": 3, "max_task_retries": 3}
METHODS = ("clip-es",)


# ------------------------------------------------------------------ stages


def writable_batch(batch: dict) -> dict:
    """Ray hands batches over zero-copy (read-only); stages write status/error per row."""
    batch["status"] = np.array(batch["status"], dtype=object)
    # An all-null column arrives as float NaN; errors are strings or None.
    batch["error"] = np.array([e if isinstance(e, str) else None for e in batch["error"]], dtype=object)
    # Lists, not numpy string arrays: ragged arrays would make Ray try (and fail) a tensor column.
    batch["labels"] = _objects([[str(label) for label in labels] for labels in batch["labels"]])
    return batch


def _objects(values: list) -> np.ndarray:
    """A 1-D object array of arrays (np.array would stack same-shape arrays into one block)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _error(batch: dict, i: int, message: str) -> None:
    batch["status"][i] = "error"
    batch["error"][i] = message


def decode_stage(batch: dict, max_pixels: int) -> dict:
    """Read and decode each image (CPU). A failure becomes an error row."""
    batch = writable_batch(batch)
    n = len(batch["id"])
    pixels = []
    for i in range(n):
        try:
            if batch["status"][i] != "ok":
                raise ValueError(batch["error"][i])
            pixels.append(decode_image(read_bytes(batch["image"][i]), max_pixels))
        except Exception as e:  # noqa: BLE001 - any failure of one item is that item's error row
            if batch["status"][i] == "ok":
                _error(batch, i, f"cannot read image {batch['image'][i]}: {type(e).__name__}: {e}")
            pixels.append(np.zeros((1, 1, 3), np.uint8))
    batch["pixels"] = _objects(pixels)
    batch["height"] = np.array([p.shape[0] for p in pixels], np.int32)
    batch["width"] = np.array([p.shape[1] for p in pixels], np.int32)
    return batch


class CamStage:
    """CLIP CAMs -> per-pixel probabilities (actor: the model is loaded once)."""

    def __init__(self, config: PipelineConfig):
        device = "cuda" if config.num_gpus else "cpu"
        self.labeler = Labeler.from_spec(config.model, config.labelset, config.label, config.pretrained, device)

    def __call__(self, batch: dict) -> dict:
        batch = writable_batch(batch)
        n = len(batch["id"])
        probs: list[np.ndarray | None] = [None] * n
        todo = []
        for i in range(n):
            if batch["status"][i] != "ok":
                continue
            try:
                self.labeler.class_ids(list(batch["labels"][i]))
                todo.append(i)
            except KeyError as e:
                _error(batch, i, str(e.args[0]))
        if todo:
            cams = self.labeler.cams([batch["pixels"][i] for i in todo], [list(batch["labels"][i]) for i in todo])
            for i, p in zip(todo, self.labeler.probs(cams)):
                probs[i] = p.astype(np.float16)
        blank = np.zeros((1, 1, 1), np.float16)
        batch["probs"] = _objects([p if p is not None else blank for p in probs])
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
            _error(batch, i, f"{step} failed: {type(e).__name__}: {e}")
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


def crf_stage(batch: dict, config: PipelineConfig, run_id: str) -> pa.Table:
    """Dense CRF, pseudo-mask and confidence PNGs (CPU tasks)."""
    labelset = load_labelset(config.labelset)
    batch = writable_batch(batch)

    def refined(i: int) -> tuple[np.ndarray, np.ndarray]:
        probs = batch["probs"][i].astype(np.float32)
        probs /= probs.sum(0, keepdims=True)  # float16 transport loses the exact normalisation
        return refine(batch["pixels"][i], probs, class_ids(labelset, list(batch["labels"][i])), config.label)

    pngs = png_rows(batch, refined, "refinement")
    return output_table(batch, pngs, labelset=config.labelset, model=config.model, method=config.method,
                        run_id=run_id)


# ------------------------------------------------------------------ output


class AtomicParquetSink(Datasink):
    """One Parquet file per write task, made visible only once complete.

    Each file is written under a hidden temporary name (pyarrow datasets skip names
    starting with ``.``) and then moved into place, so a killed job never leaves a
    half-written file that a re-run would read. The name is a hash of the ids it holds,
    so a retried write task replaces its own file instead of duplicating rows.
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
        fs, path = filesystem(self.output)
        final, tmp = f"{path}/part-{digest}.parquet", f"{path}/.part-{digest}.parquet.tmp"
        pq.write_table(table, tmp, filesystem=fs)
        fs.move(tmp, final)
        return table.num_rows


def _files(output: str) -> tuple[pafs.FileSystem, list[pafs.FileInfo]]:
    """The files directly under `output` (none before it exists)."""
    fs, path = filesystem(output)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return fs, []
    return fs, [i for i in fs.get_file_info(pafs.FileSelector(path)) if i.type == pafs.FileType.File]


def _parquet_files(output: str) -> tuple[pafs.FileSystem, list[str]]:
    fs, infos = _files(output)
    return fs, sorted(i.path for i in infos if i.base_name.endswith(".parquet")
                      and not i.base_name.startswith((".", "_")))


def read_output(output: str, columns: list[str] | None = None) -> pa.Table | None:
    """The complete Parquet files under `output` as one table (None before the first file)."""
    fs, files = _parquet_files(output)
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
        if info.base_name.startswith(".part-") and info.base_name.endswith(".tmp"):
            fs.delete_file(info.path)


class Progress:
    """Prints ``rows done/total, rows/s, ETA`` every `interval` seconds while a run writes.

    It counts rows from the footers of the Parquet files that appear under the output,
    so it works the same on a laptop and on a cluster writing to object storage.
    """

    def __init__(self, output: str, total: int, interval: float = 10.0, stream=sys.stderr, tag: str = "pseudolabel"):
        self.output, self.total, self.interval, self.stream, self.tag = output, total, interval, stream, tag
        self._known = set(_parquet_files(output)[1])
        self._counted: dict[str, int] = {}
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
        fs, files = _parquet_files(self.output)
        for f in files:
            if f not in self._known and f not in self._counted:
                self._counted[f] = pq.read_metadata(f, filesystem=fs).num_rows
        return sum(self._counted.values())

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
            except OSError:  # a listing that races a move; the next tick sees it settled
                pass


# ------------------------------------------------------------------ driver


def pending_rows(items: list[Item], done: set[str]) -> list[dict]:
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


def gpus_per_actor(config: PipelineConfig) -> float:
    """``num_gpus`` as given, else one GPU per CAM actor when the cluster has any GPU now."""
    if config.num_gpus is not None:
        return config.num_gpus
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def cpu_requests(config: PipelineConfig) -> tuple[float, float]:
    """(CPUs per CAM actor, CPUs per decode/CRF task) that fit the cluster.

    CAM actors hold their CPUs for the whole run and the CRF tasks need CPU beside
    them; on a cluster smaller than the minimum actors plus one task (a 1-CPU laptop)
    both requests shrink in proportion so the job cannot stall. A cluster with no
    CPUs yet is left to its autoscaler.
    """
    cpus = ray.cluster_resources().get("CPU", 0)
    need = config.concurrency[0] * config.num_cpus + 1
    if 0 < cpus < need:
        scale = cpus / need
        print(f"[pseudolabel] {cpus:g} CPUs < {need:g} requested; CAM actors get {config.num_cpus * scale:.2f} "
              f"CPUs and decode/CRF tasks {scale:.2f}", file=sys.stderr, flush=True)
        return config.num_cpus * scale, scale
    return config.num_cpus, 1.0


def build_dataset(config: PipelineConfig, rows: list[dict], run_id: str, cam_stage: type = CamStage
                  ) -> ray.data.Dataset:
    """The lazy graph: items -> decode (CPU tasks) -> CAM (actor pool) -> CRF (CPU tasks)."""
    num_gpus = gpus_per_actor(config)
    config = dataclasses.replace(config, num_gpus=num_gpus)
    actor_cpus, task_cpus = cpu_requests(config)
    ds = items_dataset(rows, config.rows_per_file)
    ds = ds.map_batches(decode_stage, fn_kwargs={"max_pixels": config.max_pixels},
                        batch_size=config.batch_size, num_cpus=task_cpus)
    lo, hi = config.concurrency
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        ds = ds.map_batches(cam_stage, fn_constructor_kwargs={"config": config}, batch_size=config.batch_size,
                            compute=ray.data.ActorPoolStrategy(min_size=lo, max_size=hi),
                            num_gpus=num_gpus or None, num_cpus=actor_cpus, **ACTOR_RETRIES)
    return ds.map_batches(crf_stage, fn_kwargs={"config": config, "run_id": run_id},
                          batch_size=config.batch_size, num_cpus=task_cpus, batch_format="numpy")


def run_counts(output: str, run_id: str) -> dict:
    """Rows, ok rows and error rows that the run `run_id` wrote under `output`."""
    table = read_output(output, ["status", "run_id"])
    statuses = [] if table is None else [
        s for s, r in zip(table.column("status").to_pylist(), table.column("run_id").to_pylist()) if r == run_id]
    return {"rows": len(statuses), "ok": statuses.count("ok"), "errors": statuses.count("error")}


def items_dataset(rows: list[dict], rows_per_file: int) -> ray.data.Dataset:
    """The driver's rows as a dataset of `rows_per_file`-row blocks (one Parquet file each)."""
    return ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / rows_per_file)))


def write_pending(items: list[Item], output: str, run_id: str, graph: Callable[[list[dict]], ray.data.Dataset],
                  progress_interval: float = 10.0, tag: str = "pseudolabel") -> dict:
    """Write the items not yet under `output` through the dataset ``graph(rows)`` builds.

    The driver skeleton every Parquet-writing job shares: clear what a killed run left,
    skip ids already written, write atomically with a progress line, and count what
    this run (`run_id`) wrote.
    """
    remove_temporaries(output)
    rows = pending_rows(items, existing_ids(output))
    start = time.time()
    summary = {"rows": 0, "ok": 0, "errors": 0, "skipped": len(items) - len(rows), "output": output,
               "run_id": run_id}
    if rows:
        with Progress(output, len(rows), progress_interval, tag=tag):
            graph(rows).write_datasink(AtomicParquetSink(output))
        summary.update(run_counts(output, run_id))
    summary["seconds"] = round(time.time() - start, 2)
    summary["rows_per_s"] = round(summary["rows"] / summary["seconds"], 2) if summary["seconds"] else None
    return summary


def run(config: PipelineConfig, run_id: str | None = None, cam_stage: type = CamStage,
        progress_interval: float = 10.0) -> dict:
    """Label the input into Parquet under ``config.output``; returns the job's summary.

    `cam_stage` is the actor class that turns decoded images into class probabilities
    (:class:`CamStage` for ``clip-es``); ids already in the output are skipped.
    """
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; choose from {list(METHODS)}")
    load_labelset(config.labelset)  # fail before starting Ray if the labelset is wrong
    run_id = run_id or uuid.uuid4().hex
    items = read_source(config.input)[:config.limit]
    summary = write_pending(items, config.output, run_id, lambda rows: build_dataset(config, rows, run_id, cam_stage),
                            progress_interval)
    summary["miou"] = evaluate_output(config.output, items, config.labelset)
    return summary


def run_tracked(config: PipelineConfig, mlflow_uri: str | None = None, **run_kwargs) -> dict:
    """:func:`run` inside an MLflow run: settings as params, summary as metrics, artifacts.

    The MLflow run id is also the ``run_id`` column of the rows this run writes.
    """
    from wsss_ray import tracking

    with tracking.start_run("pseudolabel", params(config), mlflow_uri) as mlrun:
        summary = run(config, run_id=mlrun.info.run_id, **run_kwargs)
        summary["mlflow_run_id"] = mlrun.info.run_id
        tracking.log_summary(summary)
        labelset = load_labelset(config.labelset)
        tracking.log_text(labelset.to_yaml(), "labelset.yaml")
        templates = config.label.templates or labelset.templates
        tracking.log_text("\n".join(t.format(c.name) for t in templates for c in labelset.classes), "prompts.txt")
        grid = overlay_grid(config.output)
        if grid is not None:
            tracking.log_image(grid, "overlays.png")
    return summary


def overlay_grid(output: str, n: int = 8) -> np.ndarray | None:
    """The first n ok rows: image over pseudo-mask overlays side by side (None if no ok rows)."""
    from wsss_ray.masks import decode_png, overlay_grid
    from wsss_ray.sources import load_image

    table = read_output(output, ["image", "status", "mask"])
    rows = [] if table is None else [r for r in table.to_pylist() if r["status"] == "ok"][:n]
    return overlay_grid([(load_image(r["image"]), decode_png(r["mask"])) for r in rows]) if rows else None


def evaluate_output(output: str, items: list[Item], labelset_name: str) -> float | None:
    """mIoU of the written masks against the items' ground truth (None without any).

    Ignored (255) pseudo-label pixels count as background; error rows count as all background.
    """
    from wsss_ray.masks import decode_png
    from wsss_ray.metrics import confusion_matrix, fill_ignored, scores
    from wsss_ray.sources import load_mask

    gt = {it.id: it.mask for it in items if it.mask}
    table = read_output(output, ["id", "status", "mask"])
    if not gt or table is None:
        return None
    k = len(load_labelset(labelset_name)) + 1
    hist = np.zeros((k, k), np.int64)
    for batch in table.to_batches():
        for row in batch.to_pylist():
            if row["id"] not in gt:
                continue
            truth = load_mask(gt.pop(row["id"]))
            pred = decode_png(row["mask"]) if row["status"] == "ok" else np.zeros_like(truth)
            hist += confusion_matrix(truth, fill_ignored(pred), k)
    return round(scores(hist).miou, 4)


def write_ground_truth(source: str, output: str, method: str = "ground-truth") -> int:
    """Write the source's ground-truth masks (confidence 255 everywhere) as an output in OUTPUT_SCHEMA.

    The upper bound for training on pseudo-masks; items without a mask are skipped.
    Returns the number of rows written.
    """
    from wsss_ray.sources import load_mask

    items = [it for it in read_source(source) if it.mask]
    masks = [load_mask(it.mask) for it in items]
    n = len(items)
    table = pa.table({
        "id": [it.id for it in items], "image": [it.image for it in items],
        "labels": [list(it.labels) for it in items],
        "width": [m.shape[1] for m in masks], "height": [m.shape[0] for m in masks],
        "mask": [encode_png(m) for m in masks],
        "confidence": [encode_png(np.full(m.shape, 255, np.uint8), palette=False) for m in masks],
        "status": ["ok"] * n, "error": [None] * n, "labelset": [None] * n, "model": [None] * n,
        "method": [method] * n, "run_id": [None] * n,
    }, schema=OUTPUT_SCHEMA)
    fs, path = filesystem(output)
    fs.create_dir(path, recursive=True)
    pq.write_table(table, f"{path}/.part-ground-truth.parquet.tmp", filesystem=fs)
    fs.move(f"{path}/.part-ground-truth.parquet.tmp", f"{path}/part-ground-truth.parquet")
    return n
