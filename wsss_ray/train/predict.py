"""Segment new images with a trained model on Ray Data, into the labelling job's Parquet schema.

    python jobs/predict.py --checkpoint outputs/train --input SOURCE --output DIR [--png-dir DIR]

The graph mirrors the labelling job with the same pieces (``wsss_ray.stages``,
``wsss_ray.store.writer``): read ->
decode (bad images become error rows) -> segment (an actor pool that loads the
checkpoint once per actor) -> Parquet in ``OUTPUT_SCHEMA`` through the atomic
sink. ``mask`` is the argmax over all classes, ``confidence`` the max softmax
probability as an 8-bit PNG, ``method`` is ``segnet`` and ``model`` the checkpoint
path. Re-running into the same output skips ids already written.
"""

from __future__ import annotations

import posixpath
import sys
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import ray
import torch

from wsss_ray.config import PredictConfig
from wsss_ray.store import filesystem, is_file, local_file
from wsss_ray.masks import overlay_grid
from wsss_ray.progress import count_attempt, count_rows, count_suspect
from wsss_ray.ray_compat import actor_pool_map
from wsss_ray.resources import actor_device, fit_cpus, gpus_per_holder
from wsss_ray.store import load_image
from wsss_ray.stages import decode_stage, output_table, png_rows, writable_batch
from wsss_ray.train.model import SegNet, load_checkpoint
from wsss_ray.train.trainer import MODEL_FILE, best_checkpoint
from wsss_ray.train.refine import predict
from wsss_ray.store import write_pending

METHOD = "segnet"


def segment(model: SegNet, image: np.ndarray, device: str | torch.device = "cpu", offset: float = 0.0,
            refine: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """uint8 HxWx3 image -> (mask uint8 HxW = argmax class, confidence uint8 HxW = round(255 * max prob)).

    `offset` and `refine` are the checkpoint's (``meta``): see ``wsss_ray.train.refine``.
    """
    conf, mask = torch.from_numpy(predict(model, image, device, offset, refine)).max(0)
    return mask.to(torch.uint8).numpy(), (conf * 255).round().to(torch.uint8).numpy()


def prediction_settings(meta: dict) -> dict:
    """The checkpoint's prediction settings for :func:`segment` (none in checkpoints older than them)."""
    return {"offset": meta.get("background_offset") or 0.0, "refine": meta.get("refine") or "none"}


def prediction_grid(model: SegNet, images: list[str], device: str = "cpu", meta: dict | None = None) -> np.ndarray:
    """Image above its prediction overlay, one column per image (uint8 HxWx3)."""
    loaded = [load_image(path) for path in images]
    settings = prediction_settings(meta or {})
    return overlay_grid([(image, segment(model, image, device, **settings)[0]) for image in loaded])


def resolve_checkpoint(spec: str) -> tuple[str, str]:
    """(model file, why it was chosen) for a ``model.pt``, a checkpoint folder or a training output folder.

    A training output folder gives its best kept checkpoint by val mIoU (the latest
    one when training had no validation split).
    """
    fs, path = filesystem(spec)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.File:
        return spec, "the file given"
    if kind == pafs.FileType.Directory:
        inside = posixpath.join(spec, MODEL_FILE)
        if is_file(inside):
            return inside, "the checkpoint folder given"
        model, metrics = best_checkpoint(spec)
        miou = metrics.get("val_miou")
        how = f"val mIoU {miou:.4f}" if miou is not None else "no validation: the latest"
        return model, f"the best checkpoint of the training run in {spec} (epoch {metrics.get('epoch')}, {how})"
    raise ValueError(f"checkpoint {spec} does not exist; pass a model.pt, a checkpoint folder, or the "
                     f"--output folder of jobs/train.py")


class SegmentStage:
    """Decoded images -> rows in OUTPUT_SCHEMA (actor: the checkpoint is loaded once)."""

    def __init__(self, checkpoint: str, num_gpus: float, run_id: str, counter=None):
        self.device = actor_device(num_gpus)
        with local_file(checkpoint) as path:
            self.model, self.meta = load_checkpoint(path, self.device)
        self.settings = prediction_settings(self.meta)
        self.checkpoint, self.run_id, self.counter = checkpoint, run_id, counter

    def __call__(self, batch: dict) -> pa.Table:
        retried = count_attempt(self.counter, "segment", batch["id"]) > 1
        batch = writable_batch(batch)

        def one(i: int) -> tuple[np.ndarray, np.ndarray]:
            if retried:  # after its actor died: name each image first, so one that kills it every time is known
                count_suspect(self.counter, "segment", batch["id"][i])
            return segment(self.model, batch["pixels"][i], self.device, **self.settings)

        pngs = png_rows(batch, one, "segmentation")
        table = output_table(batch, pngs, labelset=self.meta.get("labelset"), model=self.checkpoint,
                             method=METHOD, run_id=self.run_id)
        count_rows(self.counter, table.num_rows)
        return table


def run(config: PredictConfig, progress_interval: float = 10.0, segment_stage: type = SegmentStage) -> dict:
    """Segment every item of ``config.input`` into Parquet under ``config.output`` (and PNGs under png_dir).

    `segment_stage` is the actor class that segments decoded images (tests inject faults with it).
    """
    checkpoint, why = resolve_checkpoint(config.checkpoint)
    print(f"[predict] checkpoint {checkpoint}: {why}", file=sys.stderr, flush=True)
    with local_file(checkpoint) as path:
        load_checkpoint(path)  # fail before any Ray work if the checkpoint is wrong
    run_id = uuid.uuid4().hex
    num_gpus = gpus_per_holder(config.num_gpus, "predict", "segmentation actors")

    def graph(items: ray.data.Dataset, counter) -> ray.data.Dataset:
        actor_cpus, task_cpus = fit_cpus(config.concurrency[0], config.num_cpus, "predict")
        ds = items.map_batches(decode_stage, fn_kwargs={"max_pixels": config.max_pixels},
                            batch_size=config.batch_size, num_cpus=task_cpus)
        return actor_pool_map(ds, segment_stage, config.concurrency, num_gpus, actor_cpus,
                              fn_constructor_kwargs={"checkpoint": checkpoint, "num_gpus": num_gpus,
                                                     "run_id": run_id, "counter": counter},
                              batch_size=config.batch_size, batch_format="numpy")

    summary = write_pending(config.input, config.output, run_id, graph, config.batch_size, config.rows_per_file,
                            config.concurrency[1],
                            progress_interval=progress_interval, tag="predict")
    summary["checkpoint"] = checkpoint
    if config.png_dir:
        from wsss_ray.export import export_pngs

        summary["png_dir"], summary["pngs"] = config.png_dir, export_pngs(config.output, config.png_dir)["written"]
    return summary


__all__ = ["SegmentStage", "prediction_grid", "resolve_checkpoint", "run", "segment"]
