"""Sweeps on the toy world, end to end: a labels sweep and a training sweep.

``labels``: a labels sweep from the CLIP-ES defaults, its test score, and what the CAM cache saves.

1. Sweep (Optuna TPE) on the first `--dev` val-split images, starting from the
   method's reference defaults, as ``jobs/tune.py --kind labels`` does.
2. Label the first `--test` test-split images with the sweep's best_config.yaml,
   and with toyclip's bundled (hand-tuned) settings, through the labelling job.
3. Replay the sweep's own trials, in order, in one process: every trial with a
   fresh CAM cache, and a sample of them with no cache (each computes its CAMs, as
   every trial of an uncached sweep does); trials per hour of each.

``train``: a training sweep over the loss and the CGL threshold. Pseudo-labels
`--n-train` train-split images with toyclip's settings (masks are the full argmax,
the confidence beside them), then sweeps ``loss`` and ``cgl_threshold`` with
``jobs/tune.py --kind train`` (Optuna, first trial = the defaults cgl/0.95; ASHA
stops weak trials). Prints every trial and what the best gains over the defaults,
on `--n-val` val-split images.

    .venv/bin/python benchmarks/sweeps.py labels --samples 96 --dev 200 --test 500
    .venv/bin/python benchmarks/sweeps.py train --n-train 300 --n-val 100 --epochs 6 --samples 8
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path


def replay(configs, items, images, cache_root: str | None) -> float:
    """Seconds per trial for `configs` evaluated in order (cache_root None: no cache)."""
    from wsss_ray.tune import CamCache, evaluate_labels

    cache = CamCache(cache_root) if cache_root else None
    start = time.time()
    for config in configs:
        evaluate_labels(config, items, images, cache)
    return (time.time() - start) / len(configs)


def labels(argv: list[str]) -> int:
    """The labels sweep (see the module)."""
    parser = argparse.ArgumentParser(prog="sweeps.py labels", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=96, help="sweep trials")
    parser.add_argument("--dev", type=int, default=200, help="val images the sweep scores on")
    parser.add_argument("--test", type=int, default=500, help="test images labelled with the result")
    parser.add_argument("--uncached", type=int, default=16, help="trials replayed without the cache")
    parser.add_argument("--out", default="outputs/bench-sweep", help="sweep folder (re-runs resume it)")
    args = parser.parse_args(argv)

    import ray
    from ray import tune as ray_tune

    from wsss_ray.config import SweepConfig, resolve_label_job
    from wsss_ray.pipeline import run as label
    from wsss_ray.store import load_image
    from wsss_ray.toyworld import SPLIT_SEEDS, generate
    from wsss_ray.tune import apply_labels, dev_items, label_base, run as sweep_run

    sweep = SweepConfig(kind="labels", output=args.out, limit=args.dev, num_samples=args.samples, seed=0)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = sweep_run(sweep, f"sqlite:///{Path('outputs/mlflow.db').absolute()}")
        work = Path(tempfile.mkdtemp(prefix="sweep-test-"))
        test = str(generate(work / "test", args.test, seed=SPLIT_SEEDS["test"]))
        best = resolve_label_job({"input": test, "output": str(work / "best")}, summary["best_config_file"])
        bundled = resolve_label_job({"input": test, "output": str(work / "bundled")})
        test_best, test_bundled = label(best)["miou"], label(bundled)["miou"]
    finally:
        ray.shutdown()

    base = label_base(sweep)
    results = ray_tune.ExperimentAnalysis(str(Path(args.out).absolute()))
    trials = sorted(results.trials, key=lambda t: t.last_result.get("timestamp", 0))
    configs = [apply_labels(base, t.config) for t in trials if t.last_result.get("miou") is not None]
    items = dev_items(sweep, str(Path(args.out).absolute()))
    images = [load_image(it.image) for it in items]
    cached = replay(configs, items, images, tempfile.mkdtemp(prefix="cam-cache-"))
    sample = random.Random(0).sample(configs, min(args.uncached, len(configs)))
    uncached = replay(sample, items, images, None)

    figures = {"sweep_trials": summary["trials"], "sweep_seconds": summary["seconds"],
               "sweep_trials_per_hour": summary["trials_per_hour"], "sweep_cam_cache_hits": summary["cam_cache_hits"],
               "best_dev_miou": summary["best_miou"], "test_miou_best_config": test_best,
               "test_miou_bundled_settings": test_bundled,
               "replay_trials_per_hour_cached": round(3600 / cached, 1),
               "replay_trials_per_hour_uncached": round(3600 / uncached, 1),
               "cache_speedup": round(uncached / cached, 2)}
    print("| what | value |\n|---|---|")
    for k, v in figures.items():
        print(f"| {k} | {v} |")
    print(json.dumps(figures))
    return 0


SPACE = "loss: {choice: [cgl, ce]}\ncgl_threshold: {choice: [0.5, 0.7, 0.8, 0.9, 0.95]}\n"


def train(argv: list[str]) -> int:
    """The training sweep (see the module)."""
    parser = argparse.ArgumentParser(prog="sweeps.py train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--n-val", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--out", default="outputs/bench-sweep-train", help="sweep folder (re-runs resume it)")
    args = parser.parse_args(argv)

    import ray
    from ray import tune as ray_tune

    from wsss_ray.config import SweepConfig, resolve_label_job
    from wsss_ray.pipeline import run as label
    from wsss_ray.toyworld import SPLIT_SEEDS, generate
    from wsss_ray.tune import run as sweep_run

    work = Path(tempfile.mkdtemp(prefix="train-sweep-"))
    train = str(generate(work / "train", args.n_train, seed=SPLIT_SEEDS["train"]))
    val = str(generate(work / "val", args.n_val, seed=SPLIT_SEEDS["val"]))
    (work / "space.yaml").write_text(SPACE)
    (work / "base.yaml").write_text(f"epochs: {args.epochs}\n")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        label(resolve_label_job({"input": train, "output": str(work / "pl")}))
    finally:
        ray.shutdown()  # a fresh cluster for the sweep: nothing of the labelling run holds CPUs
    # With the dashboard: Ray Train V2 removes a finished trial's placement group only after it
    # has read the controller's state through the state API; without it the next trial waits forever.
    ray.init(num_cpus=2, log_to_driver=False)
    try:
        summary = sweep_run(SweepConfig(kind="train", input=str(work / "pl"), val=val, output=args.out,
                                        space=str(work / "space.yaml"), config=str(work / "base.yaml"),
                                        num_samples=args.samples, seed=0),
                            f"sqlite:///{Path('outputs/mlflow.db').absolute()}")
    finally:
        ray.shutdown()

    frame = ray_tune.ExperimentAnalysis(str(Path(args.out).absolute())).dataframe(metric="val_miou", mode="max")
    rows = []
    for _, r in frame.iterrows():
        rows.append((r["config/loss"], r["config/cgl_threshold"], r["val_miou"], int(r["training_iteration"])))
    print("| trial | loss | cgl_threshold | best val mIoU | at epoch |\n|---|---|---|---|---|")
    for i, (loss, thr, miou, epochs) in enumerate(rows, 1):
        print(f"| {i} | {loss} | {thr if loss == 'cgl' else '(unused)'} | {miou:.4f} | {epochs} |")
    defaults = [m for loss, thr, m, _ in rows if loss == "cgl" and thr == 0.95]
    print(json.dumps({"best_val_miou": summary["best_val_miou"], "defaults_val_miou": max(defaults) if defaults else None,
                      "seconds": summary["seconds"], "trials": summary["trials"], "best_config": summary["best_config"]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    kinds = {"labels": labels, "train": train}
    if not argv or argv[0] not in kinds:
        print("usage: sweeps.py {labels,train} [options]; see --help of each", file=sys.stderr)
        return 2
    return kinds[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
