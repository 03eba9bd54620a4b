"""Train the tiny CLIP ("toyclip") contrastively on toy-world captions, on CPU.

The recipe follows what made CLIP-ES CAMs localise on a tiny ViT: 64 px input with
8 px patches, mean-pooled patch tokens (open_clip ``pool_type='avg'``, which is
also what CLIP-ES's last layer pools), soft contrastive targets (an image and a
caption are a positive pair whenever the caption is true of the image) and
small-and-long rather than big-and-short. Checkpoints are written every
``save_every`` steps in open_clip's ``local-dir:`` format, so any of them can be
loaded with ``load_clip("local-dir:...")`` and selected by CAM quality.
"""

from __future__ import annotations

import json
import math
import time
from functools import partial
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from wsss_ray.clip import TOYCLIP_CONFIG, get_tokenizer
from wsss_ray.toyworld.toyclip import create_toyclip, save_local_dir
from wsss_ray.toyworld.world import CLASSES, Sample, caption, split_samples

@dataclass
class TrainClipConfig:
    """Settings of one training run; the defaults are the bundled toyclip's recipe."""

    steps: int = 1600
    minutes: float | None = None   # wall-clock cap; the schedule shrinks to fit it
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup: int = 100
    n_train: int = 30000
    size: int = 64
    seed: int = 0
    save_every: int = 250
    eval_images: int = 500


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 BxHxWx3 -> normalised float BxHxWx3 -> Bx3xHxW, CLIP's mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255).permute(0, 3, 1, 2)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def positives(samples: list[Sample], named: list[frozenset[str]], stuff: list[str | None]) -> torch.Tensor:
    """BxB bool: caption j is true of image i (every class it names is in image i, and
    so is the stuff it mentions)."""
    pos = torch.zeros(len(samples), len(samples), dtype=torch.bool)
    for i, s in enumerate(samples):
        labels = frozenset(s.labels)
        for j, (names, word) in enumerate(zip(named, stuff)):
            pos[i, j] = names <= labels and (word is None or word in s.stuff)
    return pos


def soft_clip_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with every true pair as a (shared) target."""
    logits = scale * img @ txt.T
    t_i = pos.float() / pos.sum(1, keepdim=True)
    t_t = pos.float().T / pos.T.sum(1, keepdim=True)
    return 0.5 * (torch.sum(-t_i * F.log_softmax(logits, 1), 1).mean()
                  + torch.sum(-t_t * F.log_softmax(logits.T, 1), 1).mean())


@torch.no_grad()
def zero_shot_map(model, tokenizer, samples: list[Sample], template: str = "a photo of a {}.") -> float:
    """Multi-label mean average precision of image-vs-class-prompt similarity."""
    from wsss_ray.metrics import average_precision
    from wsss_ray.toyworld import toyworld_labelset

    model.eval()
    labelset = toyworld_labelset()
    texts = [template.format(w) for c in labelset.classes for w in c.words]
    owners = [i for i, c in enumerate(labelset.classes) for _ in c.words]
    t = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
    cls = torch.stack([F.normalize(t[[k for k, o in enumerate(owners) if o == i]].mean(0), dim=-1)
                       for i in range(len(labelset))])
    feats = []
    for b in range(0, len(samples), 256):
        x = to_tensor(np.stack([s.image for s in samples[b:b + 256]]))
        feats.append(F.normalize(model.encode_image(x), dim=-1))
    scores = (torch.cat(feats) @ cls.T).numpy()
    truth = np.array([[c in s.labels for c in CLASSES] for s in samples])
    return float(np.mean([average_precision(truth[:, k], scores[:, k]) for k in range(len(CLASSES))]))


def train_clip(out: str | Path, cfg: TrainClipConfig | None = None, log=partial(print, flush=True)) -> dict:
    """Train toyclip into `out` (resuming from ``out/train_state.pt`` if present); returns a summary."""
    cfg = cfg or TrainClipConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = create_toyclip()
    tokenizer = get_tokenizer()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    step, total, elapsed = 0, cfg.steps, 0.0
    state_path = out / "train_state.pt"
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, elapsed = state["step"], state["elapsed"]
        total = state["total"] if cfg.minutes else cfg.steps  # a larger --steps extends the run
        log(f"resuming at step {step}/{total}")

    t0 = time.time()
    log(f"rendering {cfg.n_train} training images ...")
    train = split_samples("train", cfg.n_train, cfg.size)
    images = np.stack([s.image for s in train])
    held_out = split_samples("val", cfg.eval_images, cfg.size)
    log(f"rendered in {time.time() - t0:.0f} s")
    rng = np.random.default_rng([cfg.seed, step])
    history = []
    t_start = time.time() - elapsed
    while step < total:
        model.train()
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = rng.choice(len(train), cfg.batch_size, replace=False)
        batch = images[idx]
        flip = rng.random(len(idx)) < 0.5
        batch[flip] = batch[flip, :, ::-1]
        caps = [caption(train[i], rng) for i in idx]
        img_f, txt_f, scale = model(to_tensor(batch), tokenizer([c for c, _, _ in caps]))
        pos = positives([train[i] for i in idx], [n for _, n, _ in caps], [w for _, _, w in caps])
        loss = soft_clip_loss(img_f, txt_f, scale, pos)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        if step == 10 and cfg.minutes:
            per_step = (time.time() - t_start) / step
            total = min(total, max(step + 1, int(cfg.minutes * 60 / per_step)))
            log(f"{per_step:.2f} s/step: {total} steps fit in {cfg.minutes} min")
        if step % 25 == 0:
            log(f"step {step}/{total} loss {loss.item():.3f} lr {lr:.2e} {time.time() - t_start:.0f}s")
        if step % cfg.save_every == 0 or step == total:
            zs = zero_shot_map(model, tokenizer, held_out)
            history.append({"step": step, "loss": loss.item(), "val_map": zs, "seconds": time.time() - t_start})
            log(f"step {step}: val zero-shot mAP {zs:.3f}")
            save_local_dir(model, out / f"step_{step:05d}")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "total": total,
                        "elapsed": time.time() - t_start}, state_path)
            with open(out / "history.jsonl", "a") as f:
                f.write(json.dumps(history[-1]) + "\n")
    summary = {"steps": step, "minutes": (time.time() - t_start) / 60, "config": asdict(cfg),
               "model_cfg": TOYCLIP_CONFIG}
    save_local_dir(model, out)
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
