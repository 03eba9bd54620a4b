"""The Ray Data pseudo-labelling graph: items -> decode -> CAM -> dense CRF -> Parquet.

Each stage declares what it needs. ``decode`` and ``crf`` are CPU tasks. ``cam``
is a pool of actors that build the labeller once each (``Labeler.from_config``:
the model, the method, its prompts) and autoscales between the ``concurrency``
bounds; it takes ``num_gpus`` GPUs per actor, so GPUs never wait on the CRF. A bad
item becomes an ``error`` row and never stops the job. The Parquet side (schema,
atomic files, resume, progress) is ``wsss_ray.rows``, shared with prediction.

The algorithm (``wsss_ray.labeler``, ``wsss_ray.cam``) knows nothing of Ray.
"""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import pyarrow as pa
import ray

from wsss_ray.cam import CAM_METHODS, CamMethod
from wsss_ray.config import LabelJobConfig, params
from wsss_ray.labeler import Labeler, class_ids, refine
from wsss_ray.labelset import load_labelset
from wsss_ray.ray_compat import actor_retry_keywords
from wsss_ray.resources import fit_cpus, gpus_per_actor
from wsss_ray.rows import (count_rows, decode_stage, evaluate_output, items_dataset, mark_error, objects,
                           output_overlays, output_table, png_rows, writable_batch, write_pending)
from wsss_ray.sources import read_source



class CamStage:
    """CAMs -> per-pixel probabilities (actor: the labeller is built once)."""

    def __init__(self, config: LabelJobConfig, method_class: type[CamMethod] | None = None):
        device = "cuda" if config.num_gpus else "cpu"
        self.labeler = Labeler.from_config(config, device, method_class)

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
                mark_error(batch, i, str(e.args[0]))
        if todo:
            cams = self.labeler.cams([batch["pixels"][i] for i in todo], [list(batch["labels"][i]) for i in todo])
            for i, p in zip(todo, self.labeler.probs(cams)):
                probs[i] = p.astype(np.float16)
        blank = np.zeros((1, 1, 1), np.float16)
        batch["probs"] = objects([p if p is not None else blank for p in probs])
        return batch


def crf_stage(batch: dict, config: LabelJobConfig, run_id: str, counter=None) -> pa.Table:
    """Dense CRF, pseudo-mask and confidence PNGs (CPU tasks); the rows done go to `counter`."""
    labelset = load_labelset(config.labelset)
    batch = writable_batch(batch)

    def refined(i: int) -> tuple[np.ndarray, np.ndarray]:
        probs = batch["probs"][i].astype(np.float32)
        probs /= probs.sum(0, keepdims=True)  # float16 transport loses the exact normalisation
        return refine(batch["pixels"][i], probs, class_ids(labelset, list(batch["labels"][i])), config.post)

    pngs = png_rows(batch, refined, "refinement")
    table = output_table(batch, pngs, labelset=config.labelset, model=config.model, method=config.method,
                         run_id=run_id)
    count_rows(counter, table.num_rows)
    return table


def build_dataset(config: LabelJobConfig, rows: list[dict], run_id: str, cam_stage: type = CamStage,
                  counter=None) -> ray.data.Dataset:
    """The lazy graph: items -> decode (CPU tasks) -> CAM (actor pool) -> CRF (CPU tasks, counted)."""
    config = dataclasses.replace(config, num_gpus=gpus_per_actor(config.num_gpus))
    actor_cpus, task_cpus = fit_cpus(config.concurrency[0], config.num_cpus, "pseudolabel")
    ds = items_dataset(rows, config.rows_per_file)
    ds = ds.map_batches(decode_stage, fn_kwargs={"max_pixels": config.max_pixels},
                        batch_size=config.batch_size, num_cpus=task_cpus)
    lo, hi = config.concurrency
    with actor_retry_keywords() as retries:  # a CAM actor that dies is restarted, its batch retried
        ds = ds.map_batches(cam_stage, fn_constructor_kwargs={"config": config,
                                                              "method_class": CAM_METHODS[config.method]},
                            batch_size=config.batch_size,
                            compute=ray.data.ActorPoolStrategy(min_size=lo, max_size=hi),
                            num_gpus=config.num_gpus or None, num_cpus=actor_cpus, **retries)
    return ds.map_batches(crf_stage, fn_kwargs={"config": config, "run_id": run_id, "counter": counter},
                          batch_size=config.batch_size, num_cpus=task_cpus, batch_format="numpy")


def run(config: LabelJobConfig, run_id: str | None = None, cam_stage: type = CamStage,
        progress_interval: float = 10.0) -> dict:
    """Label the input into Parquet under ``config.output``; returns the job's summary.

    `cam_stage` is the actor class that turns decoded images into class probabilities;
    ids already in the output are skipped. mIoU is reported when the input has masks.
    """
    if config.input is None:
        raise ValueError("no input given; pass --input SOURCE (a manifest, folder, voc:... or coco:...)")
    labelset = load_labelset(config.labelset)  # fail before starting Ray if the labelset is wrong
    run_id = run_id or uuid.uuid4().hex
    items = read_source(config.input)[:config.limit]
    summary = write_pending(items, config.output, run_id,
                            lambda rows, counter: build_dataset(config, rows, run_id, cam_stage, counter),
                            progress_interval)
    summary["miou"] = evaluate_output(config.output, items, len(labelset) + 1)
    return summary


def run_tracked(config: LabelJobConfig, mlflow_uri: str | None = None, **run_kwargs) -> dict:
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
        prompts = CAM_METHODS[config.method].prompts(config.method_config, labelset)
        tracking.log_text("\n".join(prompts), "prompts.txt")
        grid = output_overlays(config.output)
        if grid is not None:
            tracking.log_image(grid, "overlays.png")
    return summary
