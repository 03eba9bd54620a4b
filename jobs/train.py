"""Train a segmentation network on pseudo-masks with Ray Train (DDP).

    python jobs/train.py --input outputs/pseudolabels --val SOURCE --loss cgl --epochs 10 --output outputs/train
    ray job submit --working-dir . -- python jobs/train.py ...

--input is the pseudo-label job's Parquet output (rows with status error are
skipped); --val a source with ground-truth masks for the per-epoch mIoU (with the
toy world and no --val: a generated toy val split). Re-running into the same
--output resumes from its latest checkpoint; --epochs is the total. Settings come
from the defaults, then --config YAML (flag names with underscores), then the flags
given. RAY_ADDRESS selects the cluster. Prints one JSON summary line.
"""

from __future__ import annotations

import sys

from wsss_ray.cli import JobParser, run_job
from wsss_ray.config import ARCHS, LOSSES, TrainConfig


def parse(argv: list[str] | None = None) -> tuple[TrainConfig, str | None]:
    p = JobParser(__doc__, TrainConfig)
    p.flag("input", "the pseudo-label job's Parquet folder or URI")
    p.flag("val", "source with ground-truth masks for val mIoU (default with toyworld: a generated toy val split)")
    p.shared("labelset")
    p.flag("loss", "cgl (confidence-guided) or ce", choices=LOSSES)
    p.flag("cgl_threshold", "CGL ignores pixels with confidence below this", type=float)
    p.flag("arch", "segmentation network", choices=ARCHS)
    p.flag("backbone_weights", "local state_dict loaded into the backbone", metavar="FILE")
    p.shared("epochs", "lr", lr="Adam learning rate, poly-decayed over the epochs")
    p.flag("batch_size", "images per worker per step", type=int)
    p.flag("crop", "random crop size in pixels", type=int)
    p.flag("aug_scales", "random rescale factors applied before the crop", type=float, nargs="+", metavar="S")
    p.shared("num_workers", "seed")
    p.gpu_flags()
    p.flag("output", "run folder or URI: checkpoints; re-runs resume")
    return p.parse(argv)


def main(argv: list[str] | None = None) -> int:
    config, mlflow_uri = parse(argv)
    return run_job("train", config, "wsss_ray.train.trainer:run_tracked", mlflow_uri)


if __name__ == "__main__":
    sys.exit(main())
