"""Ray Train (V2) DDP training of a segmentation net on the pseudo-label job's Parquet output.

Data streams from the Parquet files through Ray Data: ``read_parquet`` (``ok`` rows
only) -> a CPU map that decodes the image, mask and confidence (a person's reviewed mask,
``wsss_ray.store.reviewed``, in place of the pseudo-mask where there is one) and applies the joint
random scale/crop/flip (``wsss_ray.train.transforms.augment``) -> one shard per
worker (``get_dataset_shard``). Nothing is copied to local disk first.

Every epoch the workers fit the background offset on the calibration rows
(``wsss_ray.train.refine``: counts summed over the workers), then each reports the
train loss, val mIoU (ground-truth split, predictions made as ``jobs/predict.py``
makes them, confusion matrices summed over the workers) and samples/s;
rank 0 attaches a checkpoint (``model.pt`` in the ``save_checkpoint`` format,
``optimizer.pt``, ``state.json`` with the epoch history). The run lives in
``config.output``: re-running into it resumes from the latest checkpoint (Ray Train
V2 reloads its checkpoint-manager snapshot for the same name and storage path),
and a worker that dies restarts the group from the latest checkpoint
(``FailureConfig``). Ray lives here; the model, losses and transforms are pure torch.
"""

from __future__ import annotations

import json
import posixpath
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from wsss_ray.config import TrainConfig, flatten
from wsss_ray.store import local_file, run_folder
from wsss_ray.labelset import IGNORE_INDEX, load_labelset
from wsss_ray.masks import decode_png
from wsss_ray.metrics import accumulate, scores
from wsss_ray.resources import fit_cpus, use_gpu
from wsss_ray.store import load_image, load_mask, read_source
from wsss_ray.train.losses import make_loss
from wsss_ray.train.model import (CLIP_OPTIONS, build_model, check_backbone, load_checkpoint, read_checkpoint,
                                  save_checkpoint)
from wsss_ray.train.refine import OFFSETS, fit_offset, foreground_counts, logits_of, predict
from wsss_ray.train.transforms import augment, normalize

MODEL_FILE = "model.pt"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"
MAX_FAILURES = 3
EpochHook = Callable[[int, int], None]  # (epoch about to start, world rank)


# ------------------------------------------------------------------ data


def augment_stage(batch: dict, crop: int, scales: tuple[float, ...], reviewed: dict[str, bytes] | None = None) -> dict:
    """Decode (image from its path, mask and confidence PNGs) and jointly augment to `crop` (CPU task).

    A row whose id has a reviewed mask (`reviewed`: id -> PNG) trains on it instead, every
    pixel trusted (confidence 255). Returns uint8 arrays image Nx3xcropxcrop, mask and
    confidence Nxcropxcrop. Randomness is fresh per execution, so every epoch sees new crops.
    """
    rng = np.random.default_rng()
    reviewed = reviewed or {}
    out = []
    for row_id, path, m, c in zip(batch["id"], batch["image"], batch["mask"], batch["confidence"]):
        if row_id in reviewed:
            mask = decode_png(reviewed[row_id])
            confidence = np.full(mask.shape, 255, np.uint8)
        else:
            mask, confidence = decode_png(m), decode_png(c) if c is not None else None
        out.append(augment(load_image(str(path)), mask, confidence, crop, rng, scales))
    return {k: np.stack([o[i].numpy() for o in out]) for i, k in enumerate(("image", "mask", "confidence"))}


def reviewed_training_masks(config: TrainConfig) -> dict[str, bytes]:
    """The reviewed masks (``wsss_ray.store.reviewed``) of the training input's rows: id -> PNG."""
    from wsss_ray.store import reviewed_masks

    return {i: r["mask"] for i, r in reviewed_masks(config.input).items()}


def train_dataset(config: TrainConfig, task_cpus: float = 1.0, reviewed: dict[str, bytes] | None = None
                  ) -> ray.data.Dataset:
    """Parquet rows with status ``ok``, and rows with a reviewed mask whatever their status
    (a person fixed them) -> augmented fixed-size crops, streaming."""
    from ray.data.expressions import col

    ds = ray.data.read_parquet(config.input, num_cpus=task_cpus)
    keep = col("status") == "ok"
    if reviewed:
        keep = keep | col("id").is_in(sorted(reviewed))
    ds = ds.select_columns(["id", "image", "mask", "confidence", "status"]).filter(expr=keep)
    return ds.map_batches(augment_stage, fn_kwargs={"crop": config.crop, "scales": config.aug_scales,
                                                    "reviewed": reviewed},
                          batch_size=config.batch_size, batch_format="numpy", num_cpus=task_cpus)


def val_pairs(config: TrainConfig) -> list[tuple[str, str]]:
    """(image, ground-truth mask) of the validation split; the toy val split by default with the toy world."""
    val = config.val
    if val is None:
        if config.labelset != "toyworld":
            return []
        from wsss_ray.toyworld import default_collection

        val = default_collection("val", 100)
    items = read_source(val)
    pairs = [(it.image, it.mask) for it in items if it.mask]
    if not pairs:
        raise ValueError(f"--val {val} has no ground-truth masks; give a source whose items have 'mask'")
    return pairs


def calibration_rows(config: TrainConfig, reviewed: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """(image, mask PNG) of the first `calibration_images` ``ok`` training rows by id (a reviewed
    mask in place of the pseudo-mask): where the background offset is fitted. Empty when it is
    fixed. Two passes over the input a batch at a time, so the driver holds N rows, not the input."""
    import heapq

    from wsss_ray.store import iter_output

    n = config.calibration_images if config.background_offset is None else 0
    if not n:
        return []
    ids: list[str] = []
    for batch in iter_output(config.input, ["id", "status"]):
        usable = [i for i, status in zip(batch["id"].to_pylist(), batch["status"].to_pylist())
                  if status == "ok" or i in reviewed]
        ids = heapq.nsmallest(n, ids + usable)
    chosen, rows = set(ids), {}
    for batch in iter_output(config.input, ["id", "image", "mask"]):
        for i, image, mask in zip(*(batch[c].to_pylist() for c in ("id", "image", "mask"))):
            if i in chosen:
                rows[i] = (image, reviewed.get(i, mask))
    return [rows[i] for i in ids if rows.get(i, (None, None))[1] is not None]


def input_model(source: str) -> str | None:
    """The model named by most ``ok`` rows of a labelling job's output (None when no row names one)."""
    from collections import Counter

    from wsss_ray.store import iter_output

    names: Counter = Counter()
    for batch in iter_output(source, ["model", "status"]):
        names.update(m for m, status in zip(batch["model"].to_pylist(), batch["status"].to_pylist())
                     if m and status == "ok")
    return names.most_common(1)[0][0] if names else None


def arch_options(config: TrainConfig) -> dict:
    """The architecture's own build settings (``build_model(options=)``): for ``clip``, its CLIP spec
    (``--model``, else the one that labelled the input) and the decoder settings."""
    if config.arch != "clip":
        return {}
    options = {k: getattr(config, k) for k in CLIP_OPTIONS}
    options["model"] = config.model or input_model(config.input)
    if not options["model"]:
        raise ValueError(f"--arch clip needs the labelling CLIP and the rows of {config.input} name none; "
                         f"pass --model (and --pretrained)")
    return options


# ------------------------------------------------------------------ per worker


def _restore(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Load the latest checkpoint (if any) into model and optimizer; returns its state.json."""
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return {"epoch": 0, "history": []}
    with ckpt.as_directory() as d:
        saved, meta = read_checkpoint(Path(d) / MODEL_FILE)
        check_backbone(model, meta, "the run's latest checkpoint")
        model.load_saved_state(saved)
        opt.load_state_dict(torch.load(Path(d) / OPTIMIZER_FILE, map_location="cpu", weights_only=True))
        return json.loads((Path(d) / STATE_FILE).read_text())


def all_sum(values, device: torch.device) -> np.ndarray:
    """Sum over the workers (on `device`: NCCL reduces only CUDA tensors)."""
    t = torch.as_tensor(np.asarray(values, np.float64), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.cpu().numpy()


def train_epoch(model, loader, opt, loss_fn, device) -> tuple[float, int, int]:
    """One pass over this worker's shard; returns (sum of batch losses, samples, batches)."""
    model.train()
    total, seen, batches = 0.0, 0, 0
    for batch in loader:
        images = normalize(torch.as_tensor(batch["image"])).to(device)
        masks = torch.as_tensor(batch["mask"]).long().to(device)
        conf = (torch.as_tensor(batch["confidence"]).float() / 255).to(device)
        loss = loss_fn(model(images), masks, conf)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item()
        seen += len(masks)
        batches += 1
    return total, seen, batches


@torch.no_grad()
def evaluate(model: torch.nn.Module, pairs: list[tuple[str, str]], num_classes: int, device,
             offset: float = 0.0, refine: str = "none") -> np.ndarray:
    """Confusion matrix of predictions at full resolution over `pairs` (image, mask paths),
    made as ``jobs/predict.py`` makes them (background offset, refinement: ``wsss_ray.train.refine``)."""
    model.eval()

    return accumulate(((load_mask(m), predict(model, load_image(i), device, offset, refine).argmax(0))
                       for i, m in pairs), num_classes)


@torch.no_grad()
def background_offset(model: torch.nn.Module, rows: list[tuple[str, bytes]], device) -> float:
    """The offset at which predictions on `rows` (this worker's share of the calibration rows)
    have, summed over all workers, the foreground share of their masks (``wsss_ray.train.refine``)."""
    model.eval()
    predicted, foreground, pixels = np.zeros(len(OFFSETS)), 0.0, 0.0
    for image_path, png in rows:
        mask = decode_png(png)
        known = mask != IGNORE_INDEX
        predicted += foreground_counts(logits_of(model, load_image(image_path), device), known)
        foreground += float((mask[known] > 0).sum())
        pixels += float(known.sum())
    totals = all_sum(np.concatenate([predicted, [foreground, pixels]]), device)
    return fit_offset(totals[:-2], totals[-2], totals[-1])


def train_loop_per_worker(cfg: dict) -> None:
    """Ray Train worker: DDP over the shard of ``"train"``, report + checkpoint every epoch."""
    config: TrainConfig = cfg["config"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(config.seed)
    num_classes = cfg["num_classes"]
    model = build_model(num_classes, config.arch, config.backbone_weights, cfg["arch_options"])
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    state = _restore(model, opt)
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    loss_fn = make_loss(config.loss, config.cgl_threshold)
    shard = ray.train.get_dataset_shard("train")
    pairs = cfg["val_pairs"][rank::world]
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        if cfg.get("epoch_hook"):
            cfg["epoch_hook"](epoch, rank)
        lr = config.lr * (1 - (epoch - 1) / config.epochs) ** 0.9
        for group in opt.param_groups:
            group["lr"] = lr
        start = time.time()
        loader = shard.iter_batches(batch_size=config.batch_size, batch_format="numpy", drop_last=True,
                                    local_shuffle_buffer_size=4 * config.batch_size,
                                    local_shuffle_seed=config.seed * 1000 + epoch * world + rank)
        loss_sum, seen, batches = train_epoch(model, loader, opt, loss_fn, device)
        seconds = time.time() - start
        loss_sum, seen, batches, seconds_sum = all_sum([loss_sum, seen, batches, seconds], device)
        metrics = {"epoch": epoch, "train_loss": float(loss_sum / max(batches, 1)), "samples": int(seen),
                   "samples_per_s": float(seen / max(seconds_sum / world, 1e-9)), "lr": lr,
                   "epoch_seconds": float(seconds_sum / world)}
        net = getattr(model, "module", model)
        offset = config.background_offset
        if offset is None:
            offset = background_offset(net, cfg["calibration_rows"][rank::world], device) \
                if cfg["calibration_rows"] else 0.0
        metrics["background_offset"] = offset
        if cfg["val_pairs"]:
            hist = evaluate(net, pairs, num_classes, device, offset, config.refine)
            metrics["val_miou"] = float(scores(all_sum(hist, device)).miou)
        state["epoch"] = epoch
        state["history"].append(metrics)
        _report(model, opt, state, metrics, config, rank)


def _report(model, opt, state: dict, metrics: dict, config: TrainConfig, rank: int) -> None:
    """Every rank reports; rank 0 attaches the checkpoint (model + optimizer + state)."""
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if rank == 0:
            meta = {"epoch": state["epoch"], "labelset": config.labelset, "loss": config.loss,
                    "val_miou": metrics.get("val_miou"), "background_offset": metrics["background_offset"],
                    "refine": config.refine}
            save_checkpoint(Path(d) / MODEL_FILE, model, meta)
            torch.save(opt.state_dict(), Path(d) / OPTIMIZER_FILE)
            (Path(d) / STATE_FILE).write_text(json.dumps(state))
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=checkpoint)


# ------------------------------------------------------------------ driver


def fit(config: TrainConfig, pairs: Sequence[tuple[str, str]], epoch_hook: EpochHook | None = None,
        callbacks: list | None = None, cpu_budget: float | None = None) -> ray.train.Result:
    """Build and fit the TorchTrainer, validating on `pairs` (:func:`val_pairs`); resumes from the
    latest checkpoint under ``config.output``. `callbacks` go to the RunConfig (a Tune sweep
    passes ``TuneReportCallback`` so each epoch's metrics reach its trial, and the CPUs
    its trial may use as `cpu_budget`)."""
    num_classes = len(load_labelset(config.labelset)) + 1
    reviewed = reviewed_training_masks(config)
    worker_cpus, task_cpus = fit_cpus(config.num_workers, 1.0, "train", cpu_budget)
    storage_path, name = run_folder(config.output)
    score = {"checkpoint_score_attribute": "val_miou", "checkpoint_score_order": "max"} if pairs else {}
    trainer = ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config, "num_classes": num_classes, "val_pairs": pairs,
                           "epoch_hook": epoch_hook, "arch_options": arch_options(config),
                           "calibration_rows": calibration_rows(config, reviewed)},
        scaling_config=ray.train.ScalingConfig(num_workers=config.num_workers, use_gpu=use_gpu(config, "train"),
                                               resources_per_worker={"CPU": worker_cpus}),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=MAX_FAILURES), callbacks=callbacks,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2, **score)),
        datasets={"train": train_dataset(config, task_cpus, reviewed)},
    )
    return trainer.fit()


def _state(checkpoint: ray.train.Checkpoint | None) -> dict:
    if checkpoint is None:
        return {"epoch": 0, "history": []}
    with checkpoint.as_directory() as d:
        return json.loads((Path(d) / STATE_FILE).read_text())


def _best(result: ray.train.Result, history: list[dict]) -> tuple[ray.train.Checkpoint | None, dict | None]:
    """The kept checkpoint with the highest val mIoU (the latest without validation) and its metrics."""
    scored = [(c, m) for c, m in (result.best_checkpoints or []) if m.get("val_miou") is not None]
    if scored:
        return max(scored, key=lambda cm: (cm[1]["val_miou"], cm[1]["epoch"]))
    return result.checkpoint, (history[-1] if history else None)


def run(config: TrainConfig, epoch_hook: EpochHook | None = None,
        pairs: Sequence[tuple[str, str]] | None = None) -> dict:
    """Train; returns the job summary (epochs done, best mIoU and checkpoint, throughput).

    `pairs` is the validation split when the caller has read it already (else :func:`val_pairs`).
    """
    done_before = _state(_latest(config.output))["epoch"]
    start = time.time()
    result = fit(config, val_pairs(config) if pairs is None else pairs, epoch_hook)
    state = _state(result.checkpoint)
    history = state["history"]
    best_ckpt, best = _best(result, history)
    new = [h for h in history if h["epoch"] > done_before]
    return {
        "epochs": state["epoch"], "epochs_run": len(new),
        "best_epoch": best["epoch"] if best else None,
        "best_miou": round(best["val_miou"], 4) if best and best.get("val_miou") is not None else None,
        "background_offset": best.get("background_offset") if best else None,
        "best_checkpoint": posixpath.join(best_ckpt.path, MODEL_FILE) if best_ckpt else None,
        "last_checkpoint": posixpath.join(result.checkpoint.path, MODEL_FILE) if result.checkpoint else None,
        "train_loss": round(history[-1]["train_loss"], 4) if history else None,
        "samples_per_s": round(float(np.mean([h["samples_per_s"] for h in new])), 2) if new else None,
        "seconds": round(time.time() - start, 2), "output": config.output,
        "reviewed_masks": len(reviewed_training_masks(config)),
        "history": history,
    }


def _result(output: str) -> ray.train.Result | None:
    """The run recorded under a training output folder (None before its first checkpoint)."""
    from ray.train.v2.api.result import Result

    try:
        return Result.from_path(posixpath.join(*run_folder(output)))
    except Exception:  # noqa: BLE001 - no run there yet (or an unreadable one: training starts fresh)
        return None


def _latest(output: str) -> ray.train.Checkpoint | None:
    """The latest checkpoint recorded in the run snapshot under `output` (None before the first)."""
    result = _result(output)
    return result.checkpoint if result else None


def best_checkpoint(output: str) -> tuple[str, dict]:
    """(model file, its epoch metrics) of the best kept checkpoint of the training run in `output`.

    Best is the highest val mIoU, or the latest checkpoint when the run had no validation.
    """
    result = _result(output)
    if result is None or result.checkpoint is None:
        raise ValueError(f"{output} holds no training run with checkpoints; pass a model.pt, a checkpoint "
                         f"folder, or the --output folder of jobs/train.py")
    ckpt, metrics = _best(result, _state(result.checkpoint)["history"])
    return posixpath.join(ckpt.path, MODEL_FILE), metrics or {}


def run_tracked(config: TrainConfig, mlflow_uri: str | None = None, epoch_hook: EpochHook | None = None) -> dict:
    """:func:`run` inside an MLflow run of experiment ``train``: params, per-epoch metrics, best model, overlays."""
    from wsss_ray import tracking
    from wsss_ray.train.predict import prediction_grid

    with tracking.start_run("train", flatten(config), mlflow_uri, output=config.output) as mlrun:
        pairs = val_pairs(config)
        summary = run(config, epoch_hook, pairs)
        history = summary.pop("history")
        tracking.log_epochs(history)
        summary["mlflow_run_id"] = mlrun.info.run_id
        tracking.log_summary(summary, exclude={k for h in history for k in h})  # per-epoch series stay clean
        if summary["best_checkpoint"]:
            with local_file(summary["best_checkpoint"]) as local:
                model, meta = load_checkpoint(local)
            tracking.log_segmentation_model(model, summary["best_checkpoint"])
            if pairs:
                tracking.log_image(prediction_grid(model, [p for p, _ in pairs[:8]], meta=meta), "predictions.png")
    return summary


__all__ = ["best_checkpoint", "fit", "run", "run_tracked", "train_dataset", "train_loop_per_worker", "val_pairs"]
