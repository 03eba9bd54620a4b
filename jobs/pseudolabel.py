"""Pseudo-label a collection with CLIP on Ray Data.

    python jobs/pseudolabel.py --input SOURCE --labelset voc --output DIR [--model ViT-B-16 --pretrained FILE]
    ray job submit --working-dir . -- python jobs/pseudolabel.py ...

With no --input, a toy-world collection is generated under outputs/ and labelled with
the bundled toyclip and the toy world's settings. Prints one JSON summary line.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

import ray

from wsss_ray.config import load_label_config
from wsss_ray.labeler import LabelConfig
from wsss_ray.pipeline import METHODS, PipelineConfig, run_tracked
from wsss_ray.toyworld import embedded_default


def parse(argv: list[str] | None = None) -> tuple[PipelineConfig, str | None]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", default=None, help="PATH.jsonl | DIR | voc:ROOT[:SPLIT] | coco:ROOT:ANN.json (local or URI)")
    p.add_argument("--labelset", default="toyworld", help="voc | coco | toyworld | PATH.yaml")
    p.add_argument("--model", default="toyclip", help="toyclip | local-dir:PATH | hf-hub:ORG/REPO | open_clip name")
    p.add_argument("--pretrained", default=None, help="pretrained tag or local weights file for an open_clip name")
    p.add_argument("--method", default="clip-es", choices=METHODS)
    p.add_argument("--no-caa", action="store_true", help="skip class-aware attention affinity")
    p.add_argument("--no-crf", action="store_true", help="skip the dense CRF")
    p.add_argument("--output", default="outputs/pseudolabels", help="Parquet output folder (re-runs resume)")
    p.add_argument("--limit", type=int, default=None, help="label at most N items")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--config", default=None, help="YAML of label settings (flags override)")
    p.add_argument("--mlflow-uri", default=None,
                   help="MLflow tracking URI (default: sqlite store outputs/mlflow.db)")
    a = p.parse_args(argv)
    label = load_label_config(a.config) if a.config else LabelConfig()
    if a.input is None:
        a.input, toy_label = embedded_default()
        label = label if a.config else toy_label
    if a.no_caa:
        label = replace(label, caa=False)
    if a.no_crf:
        label = replace(label, crf=False)
    return PipelineConfig(input=a.input, output=a.output, labelset=a.labelset, model=a.model,
                          pretrained=a.pretrained, method=a.method, limit=a.limit, batch_size=a.batch_size,
                          label=label), a.mlflow_uri


def main(argv: list[str] | None = None) -> int:
    config, mlflow_uri = parse(argv)
    ray.init(ignore_reinit_error=True)  # RAY_ADDRESS selects a cluster, as in any Ray program
    print(json.dumps(run_tracked(config, mlflow_uri)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
