"""Segment new images with a trained model on Ray Data, into the pipeline's Parquet schema.

    python -m wsss_ray.predict --model CHECKPOINT --input SOURCE --output DIR [--png-dir DIR]

The graph mirrors the labelling job: read -> decode (the pipeline's ``decode_stage``:
bad images become error rows) -> segment (an actor pool that loads the checkpoint
once per actor) -> Parquet with ``OUTPUT_SCHEMA`` through the pipeline's
``AtomicParquetSink``. ``mask`` is the argmax over all classes, ``confidence`` the
max softmax probability as an 8-bit PNG, ``method`` is ``segnet`` and ``model`` the
checkpoint path. Re-running into the same output skips ids already written.
"""

from __future__ import annotations

import uuid

import numpy as np
import pyarrow as pa
import ray
import torch

from wsss_ray.masks import overlay_grid
from wsss_ray.config import PipelineConfig
from wsss_ray.pipeline import decode_stage, items_dataset, output_table, png_rows, writable_batch, write_pending
from wsss_ray.sources import load_image, local_file, read_source
from wsss_ray.train.model import SegNet, load_checkpoint
from wsss_ray.train.transforms import normalize

METHOD = "segnet"


@torch.no_grad()
def segment(model: SegNet, image: np.ndarray, device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """uint8 HxWx3 image -> (mask uint8 HxW = argmax class, confidence uint8 HxW = round(255 * max prob))."""
    x = normalize(torch.as_tensor(image).permute(2, 0, 1)[None]).to(device)
    conf, mask = model(x).softmax(1)[0].max(0)
    return mask.to(torch.uint8).cpu().numpy(), (conf * 255).round().to(torch.uint8).cpu().numpy()


def prediction_grid(model: SegNet, images: list[str], device: str = "cpu") -> np.ndarray:
    """Image above its prediction overlay, one column per image (uint8 HxWx3)."""
    loaded = [load_image(path) for path in images]
    return overlay_grid([(image, segment(model, image, device)[0]) for image in loaded])


class SegmentStage:
    """Decoded images -> rows in OUTPUT_SCHEMA (actor: the checkpoint is loaded once)."""

    def __init__(self, checkpoint: str, use_gpu: bool, run_id: str):
        self.device = "cuda" if use_gpu else "cpu"
        self.model, self.meta = load_checkpoint(local_file(checkpoint), self.device)
        self.checkpoint, self.run_id = checkpoint, run_id

    def __call__(self, batch: dict) -> pa.Table:
        batch = writable_batch(batch)
        pngs = png_rows(batch, lambda i: segment(self.model, batch["pixels"][i], self.device), "segmentation")
        return output_table(batch, pngs, labelset=self.meta.get("labelset"), model=self.checkpoint,
                            method=METHOD, run_id=self.run_id)


def run(model: str, input: str, output: str, png_dir: str | None = None, batch_size: int = 16,
        use_gpu: bool = False, concurrency: int = 1, max_pixels: int = PipelineConfig.max_pixels,
        rows_per_file: int = PipelineConfig.rows_per_file, progress_interval: float = 10.0) -> dict:
    """Segment every item of `input` into Parquet under `output` (and palette PNGs under `png_dir`)."""
    load_checkpoint(local_file(model))  # fail before any Ray work if the checkpoint is wrong
    run_id = uuid.uuid4().hex

    def graph(rows: list[dict]) -> ray.data.Dataset:
        ds = items_dataset(rows, rows_per_file)
        ds = ds.map_batches(decode_stage, fn_kwargs={"max_pixels": max_pixels}, batch_size=batch_size)
        return ds.map_batches(SegmentStage, fn_constructor_kwargs={"checkpoint": model, "use_gpu": use_gpu,
                                                                   "run_id": run_id},
                              batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=concurrency),
                              num_gpus=1 if use_gpu else None, batch_format="numpy")

    summary = write_pending(read_source(input), output, run_id, graph, progress_interval, tag="predict")
    if png_dir:
        from wsss_ray.export import export_pngs

        summary["png_dir"], summary["pngs"] = png_dir, export_pngs(output, png_dir)["written"]
    return summary


__all__ = ["SegmentStage", "prediction_grid", "run", "segment"]
