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

import argparse
import dataclasses
import json
import sys

from wsss_ray.config import LabelJobConfig, parse_settings, registered_methods, resolve_label_job

TOY_DEFAULT = ("outputs/toyworld-test", 200)  # the embedded default collection: folder, images


def parse(argv: list[str] | None = None) -> tuple[LabelJobConfig, str | None]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=None)
    p.add_argument("--input", help="PATH.jsonl | DIR | voc:ROOT[:SPLIT] | coco:ROOT:ANN.json (local or URI) "
                                   "(default: a generated toy-world collection)")
    p.add_argument("--labelset", help="voc | coco | toyworld | PATH.yaml (default: toyworld)")
    p.add_argument("--model", help="toyclip | local-dir:PATH | hf-hub:ORG/REPO | open_clip name (default: toyclip)")
    p.add_argument("--pretrained", help="pretrained tag or local weights file for an open_clip name")
    p.add_argument("--method", help=f"CAM method: {', '.join(sorted(registered_methods()))} or one added to "
                                    f"wsss_ray.cam.CAM_METHODS (default: clip-es)")
    p.add_argument("--no-caa", dest="clip_es.caa", action="store_const", const=False,
                   help="clip-es: skip class-aware attention affinity")
    p.add_argument("--prompts", dest="semples.prompts",
                   help="semples: the learned prompts (the --output of jobs/learn_prompts.py; folder, file or URI)")
    p.add_argument("--no-crf", dest="post.crf.iters", action="store_const", const=0,
                   help="skip the dense CRF (post.crf.iters: 0)")
    p.add_argument("--crf-backend", dest="post.crf.backend", choices=("torch", "pydensecrf"),
                   help="dense CRF implementation (post.crf.backend; default: torch, pydensecrf is the reference)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                   help="autocast of the CAM model (default: auto = bf16 on CPUs with native bf16, else fp32)")
    p.add_argument("--output", help="Parquet output folder or URI; re-runs resume (default: outputs/pseudolabels)")
    p.add_argument("--limit", type=int, help="label at most N items")
    p.add_argument("--batch-size", type=int, help="images per CAM batch (default: 16)")
    p.add_argument("--concurrency", metavar="MIN[,MAX]",
                   help="CAM actors; the pool autoscales between MIN and MAX (default: 1,1)")
    p.add_argument("--num-gpus", type=float,
                   help="GPUs per CAM actor (default: 1 if the cluster has GPUs or its autoscaler can start some, else 0)")
    p.add_argument("--num-cpus", type=float,
                   help="CPUs per CAM actor (default: 1; 0.5 runs two actors per core on a CPU-only machine)")
    p.add_argument("--rows-per-file", type=int, help="rows per Parquet file, the unit of resume (default: 4096)")
    config, mlflow_uri = parse_settings(p, argv, resolve_label_job)
    if config.input is None:
        from wsss_ray.toyworld import SPLIT_SEEDS, generate

        folder, n = TOY_DEFAULT
        config = dataclasses.replace(config, input=str(generate(folder, n, seed=SPLIT_SEEDS["test"])))
    return config, mlflow_uri


def main(argv: list[str] | None = None) -> int:
    config, mlflow_uri = parse(argv)
    import ray

    from wsss_ray.claim import check_output
    from wsss_ray.errors import exit_on_job_error
    from wsss_ray.pipeline import run_tracked
    from wsss_ray.ray_compat import quiet_known_ray_errors

    with quiet_known_ray_errors(), exit_on_job_error("pseudolabel"):
        check_output(config.output)  # a held or unwritable output fails before Ray and MLflow start
        ray.init(ignore_reinit_error=True)
        print(json.dumps(run_tracked(config, mlflow_uri)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
