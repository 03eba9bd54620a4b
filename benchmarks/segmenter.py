"""Val mIoU of segmenters trained on toy-world pseudo-masks, against the masks themselves: tiny vs clip.

On a local Ray instance (2 CPUs by default), all in --workdir, resumable (a re-run
reuses the data, the labelling outputs and every finished run; an interrupted
training run resumes from its last checkpoint):
1. the toy train (seeds 0..) and val (seeds 1_000_000..) splits, pseudo-labelled with
   toyclip's bundled settings; the val pseudo-masks' own mIoU is the 100 % line;
2. the train split's exact masks in the same schema (the upper bound);
3. the same budget for every run (--epochs over --n-train images, 2 DDP workers,
   batch 16 per worker, Adam, lr 0.003 with poly decay): ``--arch tiny`` with CE and
   CGL, ``--arch clip`` (frozen toyclip) with CE and CGL, with its last block
   unfrozen, and on exact masks; the headline runs with every seed of --seeds. Val mIoU
   as the job reports it (the best epoch, predictions with the fitted background offset
   and the CRF) and the same checkpoint's plain argmax;
4. samples/s with 1 and 2 workers (--throughput-epochs on the exact masks), with and
   without the feature cache where crops repeat, checkpoint sizes, and prediction
   images/s on the val images (one process, ``wsss_ray.train.predict.segment``).

    .venv/bin/python benchmarks/segmenter.py [--n-train 1000 --n-val 100 --epochs 16 --seeds 0 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_quality import pseudo_label, write_ground_truth  # noqa: E402


def runs(seeds: list[int]) -> list[tuple[str, dict, list[int]]]:
    """(row name, TrainConfig changes, seeds) of every quality run; headline rows get every seed."""
    clip = {"arch": "clip", "model": "toyclip"}
    return [
        ("`--arch tiny`, CE", {"arch": "tiny", "loss": "ce"}, seeds),
        ("`--arch tiny`, CGL 0.95", {"arch": "tiny", "loss": "cgl"}, seeds[:1]),
        ("`--arch clip`, frozen, CE", {**clip, "loss": "ce"}, seeds),
        ("`--arch clip`, frozen, CGL 0.95", {**clip, "loss": "cgl"}, seeds),
        ("`--arch clip`, last block unfrozen, CE", {**clip, "loss": "ce", "unfreeze": 1}, seeds[:1]),
        ("`--arch clip` on exact masks (upper bound), CE", {**clip, "loss": "ce", "input": "gt-train"}, seeds[:1]),
    ]


def slug(name: str, seed: int) -> str:
    keep = "".join(c if c.isalnum() else "-" for c in name.lower().replace("`", ""))
    return "-".join(p for p in keep.split("-") if p) + f"-s{seed}"


def cached(path: Path, compute):
    """The JSON in `path`, or compute it and write it (so a re-run skips finished work)."""
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return value


def predict_rate(checkpoint: str, images: list, repeats: int = 2) -> float:
    """Images/s of ``segment`` over `images` (decoded), best of `repeats` passes, after one warm-up image."""
    from wsss_ray.train.model import load_checkpoint
    from wsss_ray.train.predict import segment

    model, _ = load_checkpoint(checkpoint)
    segment(model, images[0])
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for image in images:
            segment(model, image)
        best = max(best, len(images) / (time.perf_counter() - start))
    return best


def plain_miou(checkpoint: str, pairs: list[tuple[str, str]]) -> float:
    """Val mIoU of a checkpoint's plain argmax (no background offset, no CRF)."""
    from wsss_ray.metrics import scores
    from wsss_ray.train.model import load_checkpoint
    from wsss_ray.train.trainer import evaluate

    model, meta = load_checkpoint(checkpoint)
    return float(scores(evaluate(model, pairs, meta["num_classes"], "cpu")).miou)


def cache_rate(images: list, repeats: int = 3, batch: int = 32, model_spec: str = "toyclip",
               side: int | None = None) -> dict[str, float]:
    """Training steps/s of ``--arch clip`` on `model_spec` (an open_clip name: random weights) on the
    same `batch` crops (resized to `side`), feature cache none and warm (every crop cached),
    forward + backward + Adam, in this process."""
    import numpy as np
    import torch

    from wsss_ray.train.losses import ce_loss
    from wsss_ray.train.model import build_model
    from wsss_ray.train.transforms import normalize

    x = normalize(torch.as_tensor(np.stack(images[:batch])).permute(0, 3, 1, 2))
    if side:
        x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    y = torch.randint(0, 9, (len(x), *x.shape[-2:]))
    rates = {}
    for name, mb in (("no cache", 0.0), ("cache warm", 512.0)):
        torch.manual_seed(0)
        model = build_model(9, "clip", options={"model": model_spec, "feature_cache_mb": mb}).train()
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

        def step() -> None:
            loss = ce_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()  # warm-up (fills the cache)
        best = 0.0
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(5):
                step()
            best = max(best, 5 / (time.perf_counter() - start))
        rates[name] = best
    return rates


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-val", type=int, default=100)
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--throughput-epochs", type=int, default=2)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--only", nargs="*", help="run only the rows whose name contains one of these")
    p.add_argument("--workdir", default="outputs/bench-segmenter", help="kept: re-runs resume")
    a = p.parse_args(argv)

    import ray

    from wsss_ray.config import TrainConfig
    from wsss_ray.labelset import load_labelset
    from wsss_ray.store import load_image, read_source
    from wsss_ray.toyworld import SPLIT_SEEDS, generate
    from wsss_ray.train.trainer import run as train
    from wsss_ray.store import evaluate_output

    work = Path(a.workdir).absolute()
    results = work / "results"
    manifests = {}
    for split, n in (("train", a.n_train), ("val", a.n_val)):
        manifest = work / split / "manifest.jsonl"
        manifests[split] = str(manifest if manifest.is_file() else generate(work / split, n, seed=SPLIT_SEEDS[split]))
    ray.init(address="local", num_cpus=a.cpus, include_dashboard=False, log_to_driver=False)
    for split in ("train", "val"):
        cached(results / f"pl-{split}.json", lambda: pseudo_label(manifests[split], str(work / f"pl-{split}")))
    masks_miou = cached(results / "pl-val-miou.json", lambda: evaluate_output(
        str(work / "pl-val"), manifests["val"], len(load_labelset("toyworld")) + 1, truth=a.n_val))
    if not (work / "gt-train").is_dir():
        write_ground_truth(manifests["train"], str(work / "gt-train"))

    base = TrainConfig(input=str(work / "pl-train"), val=manifests["val"], epochs=a.epochs, batch_size=16,
                       lr=0.003, num_workers=2)

    def fit(name: str, changes: dict, seed: int) -> dict:
        changes = dict(changes)
        if "input" in changes:
            changes["input"] = str(work / changes["input"])
        config = dataclasses.replace(base, output=str(work / "runs" / slug(name, seed)), seed=seed, **changes)
        s = train(config)
        last = s["history"][-1]
        return {k: s[k] for k in ("best_miou", "best_epoch", "epochs", "last_checkpoint", "best_checkpoint",
                                  "samples_per_s", "seconds")} | {"last_miou": last.get("val_miou"),
                                                                  "background_offset": last["background_offset"]}

    chosen = [r for r in runs(a.seeds) if not a.only or any(o in r[0] for o in a.only)]
    for seed in a.seeds:  # every row's first seed before any second one: a stopped run still has every row
        for name, changes, seeds in chosen:
            if seed in seeds:
                cached(results / f"{slug(name, seed)}.json", lambda: fit(name, changes, seed))
    table = [(name, [json.loads((results / f"{slug(name, seed)}.json").read_text()) for seed in seeds])
             for name, changes, seeds in chosen]
    val_pairs = [(it.image, it.mask) for it in read_source(manifests["val"])]
    for name, done in table:
        for d, seed in zip(done, a.seeds):
            d["plain_miou"] = cached(results / f"plain-{slug(name, seed)}.json",
                                     lambda: plain_miou(d["best_checkpoint"], val_pairs))

    throughput = []
    for label, changes, workers in [
        ("tiny", {"arch": "tiny"}, 1), ("tiny", {"arch": "tiny"}, 2),
        ("clip", {"arch": "clip", "model": "toyclip"}, 1), ("clip", {"arch": "clip", "model": "toyclip"}, 2),
        ("clip, crops at 1.0 scale", {"arch": "clip", "model": "toyclip", "aug_scales": (1.0,)}, 2),
        ("clip, crops at 1.0 scale, feature cache", {"arch": "clip", "model": "toyclip", "aug_scales": (1.0,),
                                                     "feature_cache_mb": 512}, 2)]:
        name = f"throughput {label} {workers}w"
        r = cached(results / f"{slug(name, 0)}.json", lambda: fit(name, {
            **changes, "input": "gt-train", "num_workers": workers, "epochs": a.throughput_epochs}, 0))
        throughput.append((label, workers, r["samples_per_s"]))
    ray.shutdown()

    val_images = [load_image(it.image) for it in read_source(manifests["val"])]
    checkpoints = {name: done[0]["last_checkpoint"] for name, done in table}
    rates = {name: cached(results / f"predict-{slug(name, 0)}.json", lambda: predict_rate(ckpt, val_images))
             for name, ckpt in checkpoints.items() if "CE" in name and "exact" not in name}

    cache = cached(results / "cache-rate.json", lambda: cache_rate(val_images))
    cache_vit = cached(results / "cache-rate-vit-b-16.json",
                       lambda: cache_rate(val_images, repeats=2, batch=4, model_spec="ViT-B-16", side=224))

    print(f"\ntoy world: {a.n_train} train / {a.n_val} val images, {a.epochs} epochs, 2 workers x batch 16, "
          f"lr 0.003, {a.cpus} CPUs\n")
    print("| | val mIoU (best epoch; offset + CRF) | vs its masks | last epoch | plain argmax, best checkpoint "
          "| vs its masks | seeds |\n|---|---|---|---|---|---|---|")
    print(f"| the val pseudo-masks themselves | {masks_miou:.4f} | 100 % | | | | |")

    def figure(values: list[float]) -> str:
        mean = statistics.mean(values)
        spread = f" ± {statistics.pstdev(values):.4f} ({', '.join(f'{v:.4f}' for v in values)})" if len(values) > 1 else ""
        return f"{mean:.4f}{spread} | {100 * mean / masks_miou:.1f} %"

    for name, done in table:
        last = statistics.mean(d["last_miou"] for d in done)
        print(f"| {name} | {figure([d['best_miou'] for d in done])} | {last:.4f} "
              f"| {figure([d['plain_miou'] for d in done])} | {len(done)} |")
    print("\n| training throughput (exact masks, mean over epochs) | workers | samples/s |\n|---|---|---|")
    for label, workers, rate in throughput:
        print(f"| {label} | {workers} | {rate:.1f} |")
    print(f"\nfeature cache, one process, batch 32 of 64 px crops, train steps/s: no cache {cache['no cache']:.2f}, "
          f"cache warm {cache['cache warm']:.2f} ({cache['cache warm'] / cache['no cache']:.2f}x)")
    print(f"feature cache, ViT-B/16 (random weights), batch 4 at 224 px, train steps/s: no cache "
          f"{cache_vit['no cache']:.2f}, cache warm {cache_vit['cache warm']:.2f} "
          f"({cache_vit['cache warm'] / cache_vit['no cache']:.2f}x)")
    print("\n| checkpoint | size (MB) | prediction images/s (64 px, one process) |\n|---|---|---|")
    for name, ckpt in checkpoints.items():
        rate = f"{rates[name]:.1f}" if name in rates else ""
        print(f"| {name} | {Path(ckpt).stat().st_size / 2**20:.2f} | {rate} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
