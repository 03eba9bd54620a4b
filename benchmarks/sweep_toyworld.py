"""A labels sweep on the toy world from the CLIP-ES defaults, its test score, and what the CAM cache saves.

1. Sweep (Optuna TPE) on the first `--dev` val-split images, starting from the
   method's reference defaults, as ``jobs/tune.py --kind labels`` does.
2. Label the first `--test` test-split images with the sweep's best_config.yaml,
   and with toyclip's bundled (hand-tuned) settings, through the labelling job.
3. Replay the sweep's own trials, in order, in one process: every trial with a
   fresh CAM cache, and a sample of them with no cache (each computes its CAMs, as
   every trial of an uncached sweep does); trials per hour of each.

    .venv/bin/python benchmarks/sweep_toyworld.py --samples 96 --dev 200 --test 500
"""

from __future__ import annotations

import argparse
import json
import random
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    from wsss_ray.sources import load_image
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


if __name__ == "__main__":
    raise SystemExit(main())
