"""Segment new images with a trained segmentation model on Ray Data.

    python jobs/predict.py --checkpoint outputs/train --input SOURCE --output DIR [--png-dir DIR]
    ray job submit --working-dir . -- python jobs/predict.py ...

--checkpoint is what training writes: a model.pt, a checkpoint folder, or the
training --output folder (then its best checkpoint by val mIoU, named on stderr).
--input is any labelling-job source. Writes Parquet in the labelling job's schema
(method "segnet"); re-runs resume. Flags that mean the same as the labelling job's
have its names. RAY_ADDRESS selects the cluster. Prints one JSON summary line.
"""

from __future__ import annotations

import sys

from wsss_ray.cli import JobParser, run_job
from wsss_ray.config import PredictConfig, resolve_predict


def parse(argv: list[str] | None = None) -> tuple[PredictConfig, None]:
    p = JobParser(__doc__, PredictConfig)
    p.flag("checkpoint", "model.pt | checkpoint folder | training output folder (best by val mIoU)")
    p.flag("input", "PATH.jsonl | DIR | voc:ROOT[:SPLIT] | coco:ROOT:ANN.json (local or URI)")
    p.flag("output", "Parquet output folder or URI; re-runs resume")
    p.flag("png_dir", "also write palette PNG masks named <id>.png here")
    p.flag("batch_size", "images per batch", type=int)
    p.shared("concurrency", "num_gpus", "num_cpus", "rows_per_file",
             concurrency="segmentation actors; the pool autoscales between MIN and MAX")
    return p.parse(argv, resolve_predict, tracked=False)


def main(argv: list[str] | None = None) -> int:
    config, _ = parse(argv)
    return run_job("predict", config, "wsss_ray.train.predict:run", tracked=False, claims_itself=True)


if __name__ == "__main__":
    sys.exit(main())
