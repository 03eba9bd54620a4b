"""Pseudo-label a collection with CLIP on Ray Data.

    python jobs/pseudolabel.py --input SOURCE --labelset voc --output DIR [--model ViT-B-16 --pretrained FILE]
    ray job submit --working-dir . -- python jobs/pseudolabel.py ...

With no --input, a toy-world collection is generated under outputs/ and labelled with
the bundled toyclip and the toy world's settings. Settings come from the defaults,
then --config YAML (flag names with underscores, plus label settings such as
bg_power), then the flags given. RAY_ADDRESS selects the cluster, as in any Ray
program. Prints one JSON summary line.
"""

from __future__ import annotations

import argparse
import json
import sys

import ray

from wsss_ray.config import PipelineConfig, parse_concurrency, parse_settings, resolve_pipeline_config
from wsss_ray.pipeline import METHODS, run_tracked


def _concurrency(value: str) -> tuple[int, int]:
    try:
        return parse_concurrency(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse(argv: list[str] | None = None) -> tuple[PipelineConfig, str | None]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=None)
    p.add_argument("--input", help="PATH.jsonl | DIR | voc:ROOT[:SPLIT] | coco:ROOT:ANN.json (local or URI)")
    p.add_argument("--labelset", help="voc | coco | toyworld | PATH.yaml (default: toyworld)")
    p.add_argument("--model", help="toyclip | local-dir:PATH | hf-hub:ORG/REPO | open_clip name (default: toyclip)")
    p.add_argument("--pretrained", help="pretrained tag or local weights file for an open_clip name")
    p.add_argument("--method", choices=METHODS, help="CAM source (default: clip-es)")
    p.add_argument("--no-caa", dest="caa", action="store_const", const=False,
                   help="skip class-aware attention affinity")
    p.add_argument("--no-crf", dest="crf", action="store_const", const=False, help="skip the dense CRF")
    p.add_argument("--output", help="Parquet output folder or URI; re-runs resume (default: outputs/pseudolabels)")
    p.add_argument("--limit", type=int, help="label at most N items")
    p.add_argument("--batch-size", type=int, help="images per CAM batch (default: 16)")
    p.add_argument("--concurrency", type=_concurrency, metavar="MIN[,MAX]",
                   help="CAM actors; the pool autoscales between MIN and MAX (default: 1,1)")
    p.add_argument("--num-gpus", type=float,
                   help="GPUs per CAM actor (default: 1 if the cluster has GPUs when the job starts, else 0)")
    p.add_argument("--num-cpus", type=float,
                   help="CPUs per CAM actor (default: 1; 0.5 runs two actors per core on a CPU-only machine)")
    return parse_settings(p, argv, resolve_pipeline_config)


def main(argv: list[str] | None = None) -> int:
    config, mlflow_uri = parse(argv)
    ray.init(ignore_reinit_error=True)
    print(json.dumps(run_tracked(config, mlflow_uri)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
