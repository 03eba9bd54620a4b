"""Train a segmentation network on pseudo-masks with Ray Train (DDP).

    python jobs/train.py --input outputs/pseudolabels --val SOURCE --loss cgl --epochs 10 --output outputs/train
    ray job submit --working-dir . -- python jobs/train.py ...

--input is the pseudo-label job's Parquet output (rows with status error are
skipped); --arch clip trains a decoder on the frozen image tower of the CLIP that
labelled it (its rows name it; --model / --pretrained to choose another); --val a source with ground-truth masks for the per-epoch mIoU (with the
toy world and no --val: a generated toy val split). Re-running into the same
--output resumes from its latest checkpoint; --epochs is the total. Settings come
from the defaults, then --config YAML (flag names with underscores), then the flags
given. Every epoch's val mIoU scores predictions as jobs/predict.py makes them from
the checkpoint (--background-offset, --refine). RAY_ADDRESS selects the cluster. Prints one JSON summary line.
"""

from __future__ import annotations

import sys

from wsss_ray.cli import JobParser, run_job
from wsss_ray.config import ARCHS, LOSSES, REFINES, TrainConfig


def parse(argv: list[str] | None = None) -> tuple[TrainConfig, str | None]:
    p = JobParser(__doc__, TrainConfig)
    p.flag("input", "the pseudo-label job's Parquet folder or URI")
    p.flag("val", "source with ground-truth masks for val mIoU (default with toyworld: a generated toy val split)")
    p.shared("labelset")
    p.flag("loss", "cgl (confidence-guided) or ce", choices=LOSSES)
    p.flag("cgl_threshold", "CGL ignores pixels with confidence below this", type=float)
    p.flag("arch", "segmentation network", choices=ARCHS)
    p.flag("backbone_weights", "local state_dict loaded into the backbone", metavar="FILE")
    p.shared("model", "pretrained", model="arch clip: the CLIP whose image tower is the backbone "
                                          "(default: the model named in the input's rows)")
    p.flag("unfreeze", "arch clip: the last N blocks of the tower train too", type=int, metavar="N")
    p.flag("feature_blocks", "arch clip: the last N blocks' tokens feed the decoder", type=int, metavar="N")
    p.flag("clip_scale", "arch clip: the tower sees each crop resized by this factor", type=float)
    p.flag("feature_cache_mb", "arch clip: memory per worker for frozen outputs of repeated crops "
                               "(helps with --aug-scales 1 and --crop at the image size)", type=float, metavar="MB")
    p.flag("background_offset", "subtracted from the background logit when predicting (default: fitted every "
                                "epoch so predictions have the training masks' foreground share; 0: plain argmax)",
           type=float)
    p.flag("refine", "crf: predictions pass through the dense CRF (val and jobs/predict.py)", choices=REFINES)
    p.flag("calibration_images", "training rows the background offset is fitted on", type=int, metavar="N")
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
