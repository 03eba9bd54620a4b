"""Pseudo-label a collection with CLIP on Ray Data.

    python jobs/pseudolabel.py --input SOURCE --labelset voc --output DIR [--model ViT-B-16 --pretrained FILE]
    ray job submit --working-dir . -- python jobs/pseudolabel.py ...

With no --input, 200 toy-world test images are generated under outputs/ and
labelled with the bundled toyclip. Settings come from the defaults, then the
model's own label_config.yaml (toyclip ships one), then --config YAML (flag names
with underscores, a method's settings under its key: clip_es: {caa: false}), then
the flags given. RAY_ADDRESS selects the cluster, as in any Ray program. Prints one
JSON summary line.
"""

from __future__ import annotations

import dataclasses
import sys

from wsss_ray.cli import JobParser, run_job, step
from wsss_ray.config import CRF_BACKENDS, LABEL_MODES, METHODS, PRECISIONS, LabelJobConfig, resolve_label_job


def parse(argv: list[str] | None = None) -> tuple[LabelJobConfig, str | None]:
    p = JobParser(__doc__, LabelJobConfig)
    p.flag("input", "PATH.jsonl | DIR | voc:ROOT[:SPLIT] | coco:ROOT:ANN.json (local or URI) "
                    "(default: 200 generated toy-world test images)")
    p.shared("labelset", "model", "pretrained")
    p.flag("labels", "where the image-level labels come from: given (the input's; an item without is an error row), "
                     "missing (the input's, proposed by the tagger where an item has none), auto (proposed for "
                     "every item; given ones are only scored against)", choices=LABEL_MODES)
    p.flag("tag_threshold", "the tagger's score a proposed label needs (tagger.threshold)", dest="tagger.threshold",
           type=float)
    p.flag("method", f"CAM method, from the registry wsss_ray.config.METHODS: {', '.join(sorted(METHODS))}")
    p.flag("no_caa", "clip-es: skip class-aware attention affinity", dest="clip_es.caa", action="store_const",
           const=False)
    p.flag("prompts", "semples: the learned prompts (the --output of jobs/learn_prompts.py; folder, file or URI)",
           dest="semples.prompts", metavar="PROMPTS")
    p.flag("no_crf", "skip the dense CRF (post.crf.iters: 0)", dest="post.crf.iters", action="store_const", const=0)
    p.flag("crf_backend", "dense CRF implementation (post.crf.backend; auto: pydensecrf, the reference, on a CPU "
                          "and the torch lattice at full resolution on a GPU)", dest="post.crf.backend",
           choices=CRF_BACKENDS)
    p.flag("precision", "autocast of the CAM model (auto: bf16 on CPUs with native bf16, fp32 on other CPUs; on "
                        "a GPU the fastest that agrees with fp32, measured at start)", choices=PRECISIONS)
    p.flag("output", "Parquet output folder or URI; re-runs resume")
    p.shared("limit", "concurrency", "num_gpus", "num_cpus", "rows_per_file",
             limit="label at most N items", concurrency="CAM actors; the pool autoscales between MIN and MAX",
             num_cpus="CPUs per CAM actor (0.5 runs two actors per core on a CPU-only machine)")
    p.flag("batch_size", "images per CAM batch", type=int)
    config, mlflow_uri = p.parse(argv, resolve_label_job)
    if config.input is None:
        from wsss_ray.toyworld import default_collection

        with step("pseudolabel", "generating the default input: 200 toy-world test images in outputs/toyworld-test"):
            config = dataclasses.replace(config, input=default_collection("test", 200))
    return config, mlflow_uri


def main(argv: list[str] | None = None) -> int:
    config, mlflow_uri = parse(argv)
    return run_job("pseudolabel", config, "wsss_ray.pipeline:run_tracked", mlflow_uri, claims_itself=True)


if __name__ == "__main__":
    sys.exit(main())
