"""SemPLeS prompt learning on Ray: class backgrounds on Ray Data, the prompts on Ray Train.

1. **Backgrounds** (Ray Data). For each image and each of its classes, the image with
   the class's CLIP-ES CAM masked out (``semples.masked_background``) is embedded by
   the frozen CLIP image tower. CLIP and the CAMs are frozen, so these features do
   not change while the prompts learn: they are computed once, by a pool of CAM
   actors, and kept as Parquet in ``OUTPUT/backgrounds`` (a re-run reuses them).
   The official code re-embeds augmented crops every epoch instead.
2. **Prompts** (Ray Train, DDP). Every worker holds the frozen text tower and one
   copy of the C x L x D prompt embeddings; each step takes a shard of (background
   feature, class) pairs, encodes all C prompts and applies ``semples.prompt_loss``.
   Gradients are averaged over the workers, so there is one set of prompts. The run
   lives in ``OUTPUT/run``: re-running resumes from its latest checkpoint.
3. The final prompts go to ``OUTPUT/prompts.safetensors`` (atomically), with each
   prompt's nearest vocabulary tokens and nearest labelset words in the summary.
"""

from __future__ import annotations

import json
import math
import posixpath
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.nn.functional as F

from wsss_ray.cam.gradcam import to_model_input
from wsss_ray.cam.semples import (PROMPTS_FILE, LearnedPrompts, encode_prompted, masked_background,
                                  nearest_tokens, prompt_loss, prompt_slots)
from wsss_ray.clip import load_clip
from wsss_ray.config import LabelJobConfig, LearnPromptsConfig, flatten, resolve_label_job
from wsss_ray.store import absolute, atomic_write, filesystem, is_file, read_bytes, run_folder
from wsss_ray.store import read_items
from wsss_ray.labeler import Labeler
from wsss_ray.labelset import load_labelset
from wsss_ray.ray_compat import actor_pool_map
from wsss_ray.resources import actor_device, fit_cpus, use_gpu
from wsss_ray.stages import decode_stage
from wsss_ray.train.trainer import all_sum

BACKGROUNDS = "backgrounds"
BACKGROUNDS_DONE = "backgrounds.json"
CHECKPOINT_FILE = "prompts.pt"
CLASS_TEMPLATE = "a photo of {}."            # t_k, SemPLeS's class text
MAX_FAILURES = 3
CHECKPOINT_SECONDS = 30.0                   # report + checkpoint at most this often, and at the end


# ------------------------------------------------------------------ 1. backgrounds (Ray Data)


def label_settings(config: LearnPromptsConfig) -> LabelJobConfig:
    """The CLIP-ES settings whose CAMs define each class's region: the model's own label settings."""
    return resolve_label_job({"model": config.model, "pretrained": config.pretrained,
                              "labelset": config.labelset, "method": "clip-es"})


class BackgroundStage:
    """Actor: decoded images -> one row per (image, class) with the class-masked image's CLIP feature."""

    def __init__(self, config: LearnPromptsConfig, num_gpus: float):
        self.labeler = Labeler.from_config(label_settings(config), actor_device(num_gpus))
        self.clip = self.labeler.method.clip
        size = self.clip.model.visual.image_size
        self.size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        ok, ids = [], []
        for i in range(len(batch["id"])):
            if batch["status"][i] != "ok" or batch["labels"][i] is None:  # no labels: nothing to learn from
                continue
            try:
                ids.append(self.labeler.class_ids(list(batch["labels"][i])))
                ok.append(i)
            except KeyError:  # a label outside the labelset: the image is skipped (and counted)
                continue
        out = {"id": [], "class_id": [], "background": []}
        cams = self.labeler.method.cams([batch["pixels"][i] for i in ok], ids)
        device = self.labeler.method.device
        for i, k, cam in zip(ok, ids, cams):
            if not k:
                continue
            x = to_model_input(batch["pixels"][i], self.size, self.clip.mean, self.clip.std)
            c = F.interpolate(torch.from_numpy(cam)[None], size=self.size, mode="bilinear", align_corners=False)[0]
            feats = self.clip.model.encode_image(masked_background(x, c).to(device))
            out["id"] += [str(batch["id"][i])] * len(k)
            out["class_id"] += k
            out["background"] += list(F.normalize(feats.float(), dim=-1).cpu().numpy())
        return {"id": np.array(out["id"], dtype=object), "class_id": np.array(out["class_id"], np.int64),
                "background": np.stack(out["background"]).astype(np.float32) if out["background"]
                else np.zeros((0, self.clip.model.visual.output_dim), np.float32)}


def _input(config: LearnPromptsConfig) -> str:
    if config.input is not None:
        return config.input
    if config.labelset != "toyworld":
        raise ValueError("prompt learning needs --input SOURCE (images with image-level labels)")
    from wsss_ray.toyworld import default_collection

    return default_collection("train", 400)


def backgrounds(config: LearnPromptsConfig, batch_size: int = 16) -> tuple[str, dict]:
    """The Parquet folder of (id, class_id, background) rows, computed unless a complete one exists.

    Returns (folder, what it was computed from and how many rows and skipped images).
    """
    folder = posixpath.join(absolute(config.output), BACKGROUNDS)
    done = posixpath.join(absolute(config.output), BACKGROUNDS_DONE)
    key = {"input": _input(config), "model": config.model, "pretrained": config.pretrained,
           "labelset": config.labelset, "limit": config.limit}
    if is_file(done):
        record = json.loads(read_bytes(done))
        if record["key"] == key:
            return folder, record
    items, _, _ = read_items(key["input"], config.limit)  # streamed, as the labelling job reads
    fs, path = filesystem(folder)
    fs.delete_dir_contents(path, missing_dir_ok=True)
    num_gpus = float(use_gpu(config, "learn_prompts"))
    actor_cpus, task_cpus = fit_cpus(1, 1.0, "learn_prompts")
    ds = items.map_batches(decode_stage, fn_kwargs={"max_pixels": 50_000_000}, batch_size=batch_size,
                           num_cpus=task_cpus)
    ds = actor_pool_map(ds, BackgroundStage, (1, config.num_workers), num_gpus, actor_cpus,
                        fn_constructor_kwargs={"config": config, "num_gpus": num_gpus}, batch_size=batch_size)
    ds.write_parquet(folder)
    written = ray.data.read_parquet(folder).select_columns(["id"])
    images = written.groupby("id").count().count()  # counted where the rows are, not on the driver
    record = {"key": key, "pairs": written.count(), "images": images, "skipped": items.count() - images}
    atomic_write(done, json.dumps(record).encode())
    return folder, record


# ------------------------------------------------------------------ 2. prompts (Ray Train)


class PromptLearner(torch.nn.Module):
    """C background prompts of L token embeddings over a frozen CLIP text tower."""

    def __init__(self, clip_model, slots, num_classes: int, width: int, seed: int):
        super().__init__()
        self.clip = clip_model.requires_grad_(False)
        self.slots = slots
        g = torch.Generator().manual_seed(seed)
        self.embeddings = torch.nn.Parameter(torch.rand(num_classes, slots.length, width, generator=g))  # as SemPLeS

    def forward(self) -> torch.Tensor:
        """Text features CxE of every prompt."""
        return encode_prompted(self.clip, self.slots, self.embeddings)


def _restore(learner: PromptLearner, opt: torch.optim.Optimizer) -> dict:
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return {"epoch": 0, "history": []}
    with ckpt.as_directory() as d:
        saved = torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    with torch.no_grad():
        learner.embeddings.copy_(saved["embeddings"])
    opt.load_state_dict(saved["optimizer"])
    return saved["state"]


def train_loop_per_worker(cfg: dict) -> None:
    """Ray Train worker: DDP over this worker's (background, class) pairs; reports as :func:`_report` says."""
    config: LearnPromptsConfig = cfg["config"]
    ctx = ray.train.get_context()
    world, rank = ctx.get_world_size(), ctx.get_world_rank()
    device = ray.train.torch.get_device()
    clip = load_clip(config.model, config.pretrained, str(device))
    labelset = load_labelset(config.labelset)
    slots = prompt_slots(clip.tokenizer, cfg["length"])
    width = clip.model.token_embedding.weight.shape[1]
    learner = PromptLearner(clip.model, slots, len(labelset), width, config.seed).to(device)
    with torch.no_grad():
        words = list(labelset.names) + list(labelset.background)
        texts = clip.tokenizer([CLASS_TEMPLATE.format(w) for w in words]).to(device)
        word_text = F.normalize(clip.model.encode_text(texts).float(), dim=-1)
        class_text = word_text[:len(labelset)]
    lr = config.lr * config.batch_size / 512                     # SemPLeS's batch scaling
    opt = torch.optim.AdamW([learner.embeddings], lr=lr, weight_decay=config.weight_decay)
    state = _restore(learner, opt)
    model = ray.train.torch.prepare_model(learner)
    shard = _load_shard(ray.train.get_dataset_shard("train"), device)
    per_worker = max(1, config.batch_size // world)
    if "class_left" not in state:
        # how often a class-masked image is still nearest its own class text: high when the
        # CAMs leave much of the object visible, and then the prompts learn the class itself
        with torch.no_grad():
            own = ((shard[1] @ word_text.T).argmax(1) == shard[0]).sum().item() if len(shard[0]) else 0
        left, pairs = all_sum([own, len(shard[0])], device)
        state["class_left"] = float(left / max(pairs, 1))
    reported_at = time.time()
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        for group in opt.param_groups:                           # cosine decay over the epochs
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / config.epochs))
        start, sums = time.time(), np.zeros(4)
        order = torch.randperm(len(shard[0]), generator=torch.Generator().manual_seed(
            config.seed * 1000 + epoch * world + rank)).to(device)
        for i in range(0, len(order), per_worker):
            k, bg = shard[0][order[i:i + per_worker]], shard[1][order[i:i + per_worker]]
            prompts = model()
            loss, pull, push = prompt_loss(bg, prompts[k], class_text[k], config.text_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sums += [loss.item() * len(k), pull.item() * len(k), push.item() * len(k), len(k)]
        # rank 0's clock decides, for every rank, whether this epoch reports and checkpoints
        late = float(rank == 0 and time.time() - reported_at >= CHECKPOINT_SECONDS)
        sums = all_sum(np.append(sums, [time.time() - start, late]), device)
        pairs = max(sums[3], 1)
        state["epoch"] = epoch
        state["history"].append({
            "epoch": epoch, "loss": float(sums[0] / pairs), "pull": float(sums[1] / pairs),
            "push": float(sums[2] / pairs), "pairs": int(sums[3]),
            "pairs_per_s": float(sums[3] / max(sums[4] / world, 1e-9)), "lr": opt.param_groups[0]["lr"]})
        if epoch == config.epochs or sums[5] > 0:
            reported_at = time.time()
            _report(learner, opt, state, rank)


def _report(learner: PromptLearner, opt: torch.optim.Optimizer, state: dict, rank: int) -> None:
    """Report the latest epoch's metrics; rank 0 attaches the checkpoint (prompts, optimizer, history).

    Epochs over precomputed features take milliseconds and a report about a second,
    so the job reports every CHECKPOINT_SECONDS and at the end; the checkpoint holds
    every epoch's metrics (the loss curve logged to MLflow).
    """
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if rank == 0:
            torch.save({"embeddings": learner.embeddings.detach().cpu(), "optimizer": opt.state_dict(),
                        "state": state}, Path(d) / CHECKPOINT_FILE)
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report(state["history"][-1], checkpoint=checkpoint)


def _load_shard(shard, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """This worker's (class ids, background features), read once and sorted by (id, class).

    A few KB per pair, and epochs then cost no Ray Data execution each. Ray Data may
    hand the rows over in any order; sorting makes the seeded batches repeatable.
    """
    rows: list[tuple[str, int, np.ndarray]] = []
    for batch in shard.iter_batches(batch_size=4096, batch_format="numpy"):
        rows += zip(map(str, batch["id"]), map(int, batch["class_id"]), batch["background"])
    if not rows:
        return torch.zeros(0, dtype=torch.long, device=device), torch.zeros(0, 1, device=device)
    rows.sort(key=lambda r: r[:2])
    return (torch.tensor([r[1] for r in rows], device=device),
            torch.as_tensor(np.stack([r[2] for r in rows]), dtype=torch.float32, device=device))


def fit(config: LearnPromptsConfig, folder: str, length: int) -> ray.train.Result:
    """Fit the prompts on the background rows in `folder`; resumes from ``OUTPUT/run``."""
    worker_cpus, task_cpus = fit_cpus(config.num_workers, 1.0, "learn_prompts")
    storage_path, name = run_folder(posixpath.join(absolute(config.output), "run"))
    trainer = ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config, "length": length},
        scaling_config=ray.train.ScalingConfig(num_workers=config.num_workers, use_gpu=use_gpu(config, "learn_prompts"),
                                               resources_per_worker={"CPU": worker_cpus}),
        run_config=ray.train.RunConfig(name=name, storage_path=storage_path,
                                       failure_config=ray.train.FailureConfig(max_failures=MAX_FAILURES),
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)),
        datasets={"train": ray.data.read_parquet(folder, num_cpus=task_cpus)},
    )
    return trainer.fit()


# ------------------------------------------------------------------ 3. the job


def prompt_length(config: LearnPromptsConfig, context_length: int) -> int:
    """`config.length`, capped so that ``a photo of P .`` fits the model's text context.

    SemPLeS's L = 30 fits CLIP's 77 tokens; a model with a shorter context (toyclip:
    24) gets the most that fits (18).
    """
    return min(config.length, context_length - 6)


@torch.no_grad()
def describe(prompts: LearnedPrompts, clip, labelset, slots) -> dict[str, dict]:
    """Per class: its prompt's nearest vocabulary token per slot and its nearest labelset words.

    The words are the classes and background words, compared as ``a photo of {word}.``
    text features with the prompt's text feature (cosine, best first).
    """
    model = clip.model
    device = next(model.parameters()).device
    emb = prompts.embeddings.to(device)
    feats = F.normalize(encode_prompted(model, slots, emb).float(), dim=-1)
    words = list(labelset.names) + list(labelset.background)
    wf = F.normalize(model.encode_text(clip.tokenizer([CLASS_TEMPLATE.format(w) for w in words]).to(device)).float(),
                     dim=-1)
    sims = feats @ wf.T
    tokens = nearest_tokens(model, clip.tokenizer, emb)
    out = {}
    for c, name in enumerate(labelset.names):
        order = sims[c].argsort(descending=True)[:3]
        out[name] = {"tokens": " ".join(tokens[c]),
                     "nearest_words": [[words[int(i)], round(float(sims[c, i]), 3)] for i in order]}
    return out


def run(config: LearnPromptsConfig) -> dict:
    """Learn the prompts; returns the job summary (loss curve under ``history``)."""
    labelset = load_labelset(config.labelset)
    start = time.time()
    clip = load_clip(config.model, config.pretrained)
    length = prompt_length(config, int(clip.tokenizer(["."]).shape[1]))
    slots = prompt_slots(clip.tokenizer, length)                  # fails here, before Ray, if it cannot fit
    folder, record = backgrounds(config)
    if record["pairs"] == 0:
        raise ValueError(f"no labelled image in {record['key']['input']} could be read; nothing to learn from")
    background_seconds = time.time() - start
    result = fit(config, folder, length)
    with result.checkpoint.as_directory() as d:
        saved = torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    prompts = LearnedPrompts(saved["embeddings"], labelset.names, config.model)
    out = posixpath.join(config.output.rstrip("/"), PROMPTS_FILE)
    atomic_write(out, prompts.to_bytes())
    history = saved["state"]["history"]
    return {"prompts": out, "classes": len(labelset), "length": length, "epochs": saved["state"]["epoch"],
            "images": record["images"], "pairs": record["pairs"], "skipped": record["skipped"],
            "class_left": round(saved["state"]["class_left"], 3), "loss": round(history[-1]["loss"], 4),
            "pull": round(history[-1]["pull"], 4),
            "push": round(history[-1]["push"], 4),
            "background_seconds": round(background_seconds, 2),
            "seconds": round(time.time() - start, 2), "output": config.output,
            "words": describe(prompts, clip, labelset, slots), "history": history}


def run_tracked(config: LearnPromptsConfig, mlflow_uri: str | None = None) -> dict:
    """:func:`run` inside an MLflow run of experiment ``learn_prompts``: loss curve, words, prompts file."""
    from wsss_ray import tracking

    with tracking.start_run("learn_prompts", flatten(config), mlflow_uri, output=config.output) as mlrun:
        summary = run(config)
        history = summary.pop("history")
        tracking.log_epochs(history)
        words = summary.pop("words")
        tracking.log_text(json.dumps(words, indent=2), "nearest_words.json")
        tracking.log_text("\n".join(f"{c}: {w['tokens']}  ~ {', '.join(x for x, _ in w['nearest_words'])}"
                                    for c, w in words.items()), "nearest_words.txt")
        tracking.log_file(summary["prompts"])
        summary["mlflow_run_id"] = mlrun.info.run_id
        tracking.log_summary(summary, exclude={k for h in history for k in h})
        summary["words"] = words
    return summary


__all__ = ["backgrounds", "describe", "fit", "run", "run_tracked", "train_loop_per_worker"]
