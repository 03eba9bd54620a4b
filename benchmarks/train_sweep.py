"""A training sweep over the loss and the CGL threshold on the toy world.

Pseudo-labels `--n-train` train-split images with toyclip's settings (masks are the
full argmax, the confidence beside them), then sweeps ``loss`` and
``cgl_threshold`` with ``jobs/tune.py --kind train`` (Optuna, first trial = the
defaults cgl/0.95; ASHA stops weak trials). Prints every trial and what the best
gains over the defaults, on `--n-val` val-split images.

    .venv/bin/python benchmarks/train_sweep.py --n-train 300 --n-val 100 --epochs 6 --samples 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

SPACE = "loss: {choice: [cgl, ce]}\ncgl_threshold: {choice: [0.5, 0.7, 0.8, 0.9, 0.95]}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


if __name__ == "__main__":
    raise SystemExit(main())
