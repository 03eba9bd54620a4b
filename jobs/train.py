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

import argparse
import json
import sys

import ray

from wsss_ray.config import LOSSES, TrainConfig, parse_settings, resolve_train
from wsss_ray.train.model import ARCHS


def parse(argv: list[str] | None = None) -> tuple[TrainConfig, str | None]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=None)
    p.add_argument("--input", help="the pseudo-label job's Parquet folder or URI (default: outputs/pseudolabels)")
    p.add_argument("--val", help="source with ground-truth masks for val mIoU (default with toyworld: toy val split)")
    p.add_argument("--labelset", help="voc | coco | toyworld | PATH.yaml (default: toyworld)")
    p.add_argument("--loss", choices=LOSSES, help="cgl (confidence-guided) or ce (default: cgl)")
    p.add_argument("--cgl-threshold", type=float, help="CGL ignores pixels with confidence below this (0.95)")
    p.add_argument("--arch", choices=sorted(ARCHS), help="segmentation network (default: tiny)")
    p.add_argument("--backbone-weights", metavar="FILE", help="local state_dict loaded into the backbone")
    p.add_argument("--epochs", type=int, help="total epochs; a resumed run trains only the missing ones (10)")
    p.add_argument("--batch-size", type=int, help="images per worker per step (16)")
    p.add_argument("--lr", type=float, help="Adam learning rate, poly-decayed over the epochs (0.003)")
    p.add_argument("--crop", type=int, help="random crop size in pixels (64)")
    p.add_argument("--aug-scales", type=float, nargs="+", metavar="S",
                   help="random rescale factors applied before the crop (0.5 0.75 1.0 1.25 1.5)")
    p.add_argument("--num-workers", type=int, help="Ray Train workers (DDP ranks) (2)")
    p.add_argument("--use-gpu", action="store_const", const=True,
                   help="one GPU per worker (default: when the cluster has GPUs or its autoscaler can start some)")
    p.add_argument("--no-gpu", dest="use_gpu", action="store_const", const=False, help="CPU only")
    p.add_argument("--seed", type=int, help="initial weights and shuffle order (0)")
    p.add_argument("--output", help="run folder or URI: checkpoints; re-runs resume (default: outputs/train)")
    return parse_settings(p, argv, resolve_train)


def main(argv: list[str] | None = None) -> int:
    config, mlflow_uri = parse(argv)
    from wsss_ray.ray_compat import quiet_known_ray_errors
    from wsss_ray.train.trainer import run_tracked

    with quiet_known_ray_errors():
        ray.init(ignore_reinit_error=True)
        print(json.dumps(run_tracked(config, mlflow_uri)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
