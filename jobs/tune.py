"""Sweep labelling, tagger or training settings with Ray Tune; every trial is an MLflow run.

    python jobs/tune.py --kind labels [--input DEV_SOURCE] --model toyclip --num-samples 64 --output outputs/sweep
    python jobs/tune.py --kind tags [--input LABELLED_SOURCE] --num-samples 32 --output outputs/sweep-tags
    python jobs/tune.py --kind train --input outputs/pseudolabels --num-samples 8 --output outputs/sweep-train
    ray job submit --working-dir . -- python jobs/tune.py ...

labels: trials label a dev source that has masks (default with the toy world: 200
generated val images) and report the pseudo-masks' mIoU; CAMs are computed once per
distinct CAM-level setting and cached under --output. tags: trials run the tagger on
a dev source with image-level labels (no masks needed) and report the F1 of the
labels it proposes, to choose its threshold. train: trials fit the
segmentation net on the labelling job's Parquet and report val mIoU each epoch; ASHA
stops weak ones. The best settings land in OUTPUT/best_config.yaml, which
jobs/pseudolabel.py --config (or jobs/train.py --config) takes unchanged. Re-running
with the same --output resumes the sweep. Prints one JSON summary line.
"""

from __future__ import annotations

import sys

from wsss_ray.cli import JobParser, run_job
from wsss_ray.config import METHODS, SEARCHERS, SWEEP_KINDS, SweepConfig, resolve


def parse(argv: list[str] | None = None) -> tuple[SweepConfig, str | None]:
    p = JobParser(__doc__, SweepConfig)
    p.flag("kind", "what to tune", choices=SWEEP_KINDS)
    p.flag("input", "labels: dev source with masks; tags: dev source with image-level labels; "
                    "train: the labelling job's Parquet output")
    p.flag("val", "train: source with ground-truth masks for val mIoU (as jobs/train.py)")
    p.flag("output", "sweep folder: Tune state, CAM cache, best_config.yaml")
    p.flag("space", "search space YAML (default: wsss_ray/spaces/<kind>.yaml)")
    p.shared("model", "pretrained", "labelset", model="labels, tags: the CLIP model",
             pretrained="labels, tags: pretrained tag or weights file")
    p.flag("method", f"labels: CAM method ({', '.join(sorted(METHODS))}; default: the --config file's, else the "
                     f"model's own, else excel)")
    p.shared("limit", limit="labels, tags: dev images")
    p.flag("searcher", "optuna (TPE) or random", choices=SEARCHERS)
    p.flag("num_samples", "trials", type=int)
    p.flag("max_concurrent", "trials at once", type=int)
    p.flag("time_budget_s", "stop starting trials after this many seconds", type=float)
    p.shared("seed", seed="searcher seed")
    p.flag("no_cam_cache", "labels: compute CAMs in every trial (to measure what the cache saves)",
           dest="cam_cache", action="store_const", const=False)
    p.flag("save_to_model", "labels, tags: also write the best settings into the local-dir: model's "
                            "label_config.yaml",
           action="store_const", const=True)
    p.shared("num_workers", num_workers="train: Ray Train workers per trial")
    return p.parse(argv, _resolve, config_help="settings the trials start from: a jobs/pseudolabel.py --config "
                                               "(labels, tags) or jobs/train.py --config (train)")


def _resolve(settings: dict, config_file: str | None) -> SweepConfig:
    """--config here is the settings file the trials start from, not the sweep's own settings."""
    return resolve(SweepConfig, {**settings, "config": config_file} if config_file else settings)


def main(argv: list[str] | None = None) -> int:
    config, mlflow_uri = parse(argv)
    return run_job("tune", config, "wsss_ray.tune:run", mlflow_uri, hide=("best_config",))


if __name__ == "__main__":
    sys.exit(main())
