"""Segment new images with a trained segmentation model (entry point; the work is in wsss_ray.train.predict).

    python -m wsss_ray.predict --model CHECKPOINT --input SOURCE --output DIR [--png-dir DIR]

CHECKPOINT is a ``model.pt`` written by training (the summary's ``best_checkpoint``).
SOURCE is any pseudo-label job input (manifest, folder with labels, voc:, coco:).
Writes Parquet in the pipeline's schema (method ``segnet``) and, with --png-dir,
palette PNGs named by id. RAY_ADDRESS selects the cluster. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wsss_ray.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint file (model.pt) written by jobs/train.py")
    p.add_argument("--input", required=True, help="PATH.jsonl | DIR | voc:ROOT[:SPLIT] | coco:ROOT:ANN.json")
    p.add_argument("--output", required=True, help="Parquet output folder or URI; re-runs resume")
    p.add_argument("--png-dir", help="also write palette PNG masks named <id>.png here")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (16)")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per segmentation actor")
    p.add_argument("--concurrency", type=int, default=1, help="segmentation actors (1)")
    a = p.parse_args(argv)
    import ray

    from wsss_ray.train.predict import run

    ray.init(ignore_reinit_error=True)
    print(json.dumps(run(a.model, a.input, a.output, a.png_dir, a.batch_size, a.use_gpu, a.concurrency)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
