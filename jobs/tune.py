"""Sweep labelling or training settings with Ray Tune; every trial is an MLflow run.

    python jobs/tune.py --kind labels [--input DEV_SOURCE] --model toyclip --num-samples 64 --output outputs/sweep
    python jobs/tune.py --kind train --input outputs/pseudolabels --num-samples 8 --output outputs/sweep-train
    ray job submit --working-dir . -- python jobs/tune.py ...

labels: trials label a dev source that has masks (default with the toy world: 200
generated val images) and report the pseudo-masks' mIoU; CAMs are computed once per
distinct CAM-level setting and cached under --output. train: trials fit the
segmentation net on the labelling job's Parquet and report val mIoU each epoch; ASHA
stops weak ones. The best settings land in OUTPUT/best_config.yaml, which
jobs/pseudolabel.py --config (or jobs/train.py --config) takes unchanged. Re-running
with the same --output resumes the sweep. Prints one JSON summary line.
"""

from __future__ import annotations

import argparse
import json
import sys

from wsss_ray.config import SEARCHERS, SWEEP_KINDS, SweepConfig, parse_settings, resolve_sweep


def parse(argv: list[str] | None = None) -> tuple[SweepConfig, str | None]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=None)
    p.add_argument("--kind", choices=SWEEP_KINDS, help="what to tune (default: labels)")
    p.add_argument("--input", help="labels: dev source with masks; train: the labelling job's Parquet output")
    p.add_argument("--val", help="train: source with ground-truth masks for val mIoU (as jobs/train.py)")
    p.add_argument("--output", help="sweep folder: Tune state, CAM cache, best_config.yaml (default: outputs/sweep)")
    p.add_argument("--space", help="search space YAML (default: wsss_ray/spaces/<kind>.yaml)")
    p.add_argument("--model", help="labels: CLIP model spec (default: toyclip)")
    p.add_argument("--pretrained", help="labels: pretrained tag or weights file")
    p.add_argument("--labelset", help="voc | coco | toyworld | PATH.yaml (default: toyworld)")
    p.add_argument("--method", help="labels: CAM method (default: clip-es)")
    p.add_argument("--limit", type=int, help="labels: dev images (default: 200)")
    p.add_argument("--searcher", choices=SEARCHERS, help="optuna (TPE) or random (default: optuna)")
    p.add_argument("--num-samples", type=int, help="trials (default: 32)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: 2)")
    p.add_argument("--time-budget-s", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--seed", type=int, help="searcher seed (default: 0)")
    p.add_argument("--no-cam-cache", dest="cam_cache", action="store_const", const=False,
                   help="labels: compute CAMs in every trial (to measure what the cache saves)")
    p.add_argument("--save-to-model", action="store_const", const=True,
                   help="labels: also write the best settings as the local-dir: model's label_config.yaml")
    p.add_argument("--num-workers", type=int, help="train: Ray Train workers per trial (default: 1)")
    return parse_settings(p, argv, _resolve, config_help="settings the trials start from: a jobs/pseudolabel.py "
                                                         "--config (labels) or jobs/train.py --config (train)")


def _resolve(settings: dict, config_file: str | None) -> SweepConfig:
    """--config here is the settings file the trials start from, not the sweep's own settings."""
    return resolve_sweep({**settings, "config": config_file} if config_file else settings)


def main(argv: list[str] | None = None) -> int:
    config, mlflow_uri = parse(argv)
    import ray

    from wsss_ray.ray_compat import quiet_known_ray_errors
    from wsss_ray.tune import run

    with quiet_known_ray_errors():
        ray.init(ignore_reinit_error=True)
        summary = run(config, mlflow_uri)
    summary.pop("best_config")
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
