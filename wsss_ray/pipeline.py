"""The Ray Data pseudo-labelling graph: items -> decode -> CLIP CAM -> dense CRF -> Parquet.

Each stage declares what it needs. ``decode`` and ``crf`` are CPU tasks. ``cam``
is an autoscaling pool of actors that load the model once each, and it takes a
GPU per actor when ``num_gpus_per_actor`` > 0, so GPUs never wait on the CRF. A
bad item becomes an ``error`` row and never stops the job. Re-running into the
same output skips ids that are already written.

This module is the only Ray Data caller. The algorithm (``wsss_ray.labeler``)
knows nothing of Ray.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import ray

from wsss_ray.labeler import LabelConfig, Labeler, class_ids, refine
from wsss_ray.labelset import load_labelset
from wsss_ray.masks import encode_png
from wsss_ray.sources import Item, decode_image, read_bytes, read_source

METHODS = ("clip-es",)
# The output contract (DESIGN.md): one row per input item.
OUTPUT_SCHEMA = pa.schema([
    ("id", pa.string()), ("image", pa.string()), ("labels", pa.list_(pa.string())),
    ("width", pa.int32()), ("height", pa.int32()), ("mask", pa.binary()), ("confidence", pa.binary()),
    ("status", pa.string()), ("error", pa.string()),
    ("labelset", pa.string()), ("model", pa.string()), ("method", pa.string()),
])


@dataclass(frozen=True)
class PipelineConfig:
    """Every setting of a pseudo-labelling run; field names are the job's flags."""

    input: str
    output: str = "outputs/pseudolabels"
    labelset: str = "toyworld"
    model: str = "toyclip"
    pretrained: str | None = None
    method: str = "clip-es"
    limit: int | None = None
    batch_size: int = 16
    num_gpus_per_actor: float = 0.0
    min_actors: int = 1
    max_actors: int = 1
    max_pixels: int = 50_000_000
    label: LabelConfig = field(default_factory=LabelConfig)


# ------------------------------------------------------------------ stages


def _writable(batch: dict) -> dict:
    """Ray hands batches over zero-copy (read-only); stages write status/error per row."""
    batch["status"] = np.array(batch["status"], dtype=object)
    # An all-null column arrives as float NaN; errors are strings or None.
    batch["error"] = np.array([e if isinstance(e, str) else None for e in batch["error"]], dtype=object)
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
    batch = _writable(batch)
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
        device = "cuda" if config.num_gpus_per_actor > 0 else "cpu"
        self.labeler = Labeler.from_spec(config.model, config.labelset, config.label, config.pretrained, device)

    def __call__(self, batch: dict) -> dict:
        batch = _writable(batch)
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


def crf_stage(batch: dict, config: PipelineConfig) -> dict:
    """Dense CRF, pseudo-mask and confidence PNGs (CPU tasks)."""
    labelset = load_labelset(config.labelset)
    cfg = config.label
    batch = _writable(batch)
    n = len(batch["id"])
    masks, confs = [None] * n, [None] * n
    for i in range(n):
        if batch["status"][i] != "ok":
            continue
        try:
            probs = batch["probs"][i].astype(np.float32)
            probs /= probs.sum(0, keepdims=True)  # float16 transport loses the exact normalisation
            ids = class_ids(labelset, list(batch["labels"][i]))
            mask, conf = refine(batch["pixels"][i], probs, ids, cfg)
            masks[i], confs[i] = encode_png(mask), encode_png(conf, palette=False)
        except Exception as e:  # noqa: BLE001
            _error(batch, i, f"refinement failed: {type(e).__name__}: {e}")
    return pa.table({
        "id": [str(x) for x in batch["id"]],
        "image": [str(x) for x in batch["image"]],
        "labels": [[str(l) for l in x] for x in batch["labels"]],
        "width": batch["width"], "height": batch["height"],
        "mask": masks, "confidence": confs,
        "status": list(batch["status"]), "error": list(batch["error"]),
        "labelset": [config.labelset] * n, "model": [config.model] * n, "method": [config.method] * n,
    }, schema=OUTPUT_SCHEMA)


# ------------------------------------------------------------------ driver


def existing_ids(output: str) -> set[str]:
    """Ids already written under `output` (empty when there is no output yet)."""
    path = Path(output)
    if not path.is_dir() or not any(path.glob("*.parquet")):
        return set()
    return set(pads.dataset(str(path), format="parquet").to_table(columns=["id"]).column("id").to_pylist())


def _rows(items: list[Item], done: set[str]) -> list[dict]:
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


def run_tracked(config: PipelineConfig, mlflow_uri: str | None = None) -> dict:
    """:func:`run` inside an MLflow run: settings as params, summary as metrics, artifacts."""
    from wsss_ray import tracking

    with tracking.start_run("pseudolabel", tracking.flatten(config), mlflow_uri) as mlrun:
        summary = run(config)
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
    from wsss_ray.masks import decode_png, overlay
    from wsss_ray.sources import load_image

    table = pads.dataset(output, format="parquet").to_table(columns=["image", "status", "mask"])
    rows = [r for r in table.to_pylist() if r["status"] == "ok"][:n]
    if not rows:
        return None
    tiles = []
    for r in rows:
        image = load_image(r["image"])
        tiles.append(np.concatenate([image, overlay(image, decode_png(r["mask"]))], axis=0))
    h = max(t.shape[0] for t in tiles)
    return np.concatenate([np.pad(t, ((0, h - t.shape[0]), (0, 0), (0, 0))) for t in tiles], axis=1)


def run(config: PipelineConfig) -> dict:
    """Label the input into Parquet under ``config.output``; returns a summary dict."""
    if config.method not in METHODS:
        raise ValueError(f"unknown --method {config.method!r}; choose from {list(METHODS)}")
    load_labelset(config.labelset)  # fail before starting Ray if the labelset is wrong
    items = read_source(config.input)[:config.limit]
    rows = _rows(items, existing_ids(config.output))
    start = time.time()
    summary = {"rows": 0, "ok": 0, "errors": 0, "skipped": len(items) - len(rows), "output": config.output}
    if rows:
        ds = ray.data.from_items(rows)
        ds = ds.map_batches(decode_stage, fn_kwargs={"max_pixels": config.max_pixels},
                            batch_size=config.batch_size, num_cpus=1)
        ds = ds.map_batches(CamStage, fn_constructor_kwargs={"config": config}, batch_size=config.batch_size,
                            compute=ray.data.ActorPoolStrategy(min_size=config.min_actors, max_size=config.max_actors),
                            num_gpus=config.num_gpus_per_actor or None, num_cpus=1)
        ds = ds.map_batches(crf_stage, fn_kwargs={"config": config}, batch_size=config.batch_size, num_cpus=1,
                            batch_format="numpy")
        ds.write_parquet(config.output)  # file names carry a per-write UUID: re-runs add files
        table = pads.dataset(config.output, format="parquet").to_table(columns=["id", "status"])
        ids = set(r["id"] for r in rows)
        statuses = [s for i, s in zip(table.column("id").to_pylist(), table.column("status").to_pylist()) if i in ids]
        summary.update(rows=len(statuses), ok=statuses.count("ok"), errors=statuses.count("error"))
    summary["seconds"] = round(time.time() - start, 2)
    summary["rows_per_s"] = round(summary["rows"] / summary["seconds"], 2) if summary["seconds"] else None
    summary["miou"] = evaluate_output(config.output, items, config.labelset) if Path(config.output).is_dir() else None
    return summary


def evaluate_output(output: str, items: list[Item], labelset_name: str) -> float | None:
    """mIoU of the written masks against the items' ground truth (None without any).

    Ignored (255) pseudo-label pixels count as background; error rows count as all background.
    """
    from wsss_ray.masks import decode_png
    from wsss_ray.metrics import confusion_matrix, fill_ignored, scores
    from wsss_ray.sources import load_mask

    gt = {it.id: it.mask for it in items if it.mask}
    if not gt:
        return None
    k = len(load_labelset(labelset_name)) + 1
    hist = np.zeros((k, k), np.int64)
    table = pads.dataset(output, format="parquet").to_table(columns=["id", "status", "mask"])
    for row in table.to_pylist():
        if row["id"] not in gt:
            continue
        truth = load_mask(gt.pop(row["id"]))
        pred = decode_png(row["mask"]) if row["status"] == "ok" else np.zeros_like(truth)
        hist += confusion_matrix(truth, fill_ignored(pred), k)
    return round(scores(hist).miou, 4)
