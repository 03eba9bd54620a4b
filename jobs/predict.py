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

import argparse
import json
import sys

import ray

from wsss_ray.config import PredictConfig, parse_settings, resolve_predict


def parse(argv: list[str] | None = None) -> tuple[PredictConfig, str | None]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=None)
    p.add_argument("--checkpoint", help="model.pt | checkpoint folder | training output folder (best by val mIoU)")
    p.add_argument("--input", help="PATH.jsonl | DIR | voc:ROOT[:SPLIT] | coco:ROOT:ANN.json (local or URI)")
    p.add_argument("--output", help="Parquet output folder or URI; re-runs resume (default: outputs/predictions)")
    p.add_argument("--png-dir", help="also write palette PNG masks named <id>.png here")
    p.add_argument("--batch-size", type=int, help="images per batch (default: 16)")
    p.add_argument("--concurrency", metavar="MIN[,MAX]",
                   help="segmentation actors; the pool autoscales between MIN and MAX (default: 1,1)")
    p.add_argument("--num-gpus", type=float,
                   help="GPUs per segmentation actor (default: 1 if the cluster has GPUs or its autoscaler can start some, else 0)")
    p.add_argument("--num-cpus", type=float, help="CPUs per segmentation actor (default: 1)")
    p.add_argument("--rows-per-file", type=int, help="rows per Parquet file, the unit of resume (default: 4096)")
    return parse_settings(p, argv, resolve_predict, tracked=False)


def main(argv: list[str] | None = None) -> int:
    config, _ = parse(argv)
    from wsss_ray.claim import check_output
    from wsss_ray.errors import exit_on_job_error
    from wsss_ray.ray_compat import quiet_known_ray_errors
    from wsss_ray.train.predict import run

    with quiet_known_ray_errors(), exit_on_job_error("predict"):
        check_output(config.output)  # a held or unwritable output fails before Ray and MLflow start
        ray.init(ignore_reinit_error=True)
        print(json.dumps(run(config)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
