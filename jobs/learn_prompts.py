"""Learn SemPLeS background prompts for a labelset on Ray (Ray Data + Ray Train), tracked in MLflow.

    python jobs/learn_prompts.py --input SOURCE --labelset voc --model ViT-B-16 --pretrained FILE --output PROMPTS
    python jobs/pseudolabel.py --method semples --prompts PROMPTS --input SOURCE ...

With no --input, 400 generated toy-world train images are used with the bundled
toyclip. Each class's CLIP-ES CAM (from the model's own label settings) masks the
class out of its images; one background prompt per class is learned against those
backgrounds on Ray Train (--num-workers data-parallel workers). PROMPTS is a folder
or URI: it holds prompts.safetensors and the run, and a re-run resumes from the
latest checkpoint. Prints one JSON summary line.
"""

from __future__ import annotations

import argparse
import json
import sys

from wsss_ray.config import LearnPromptsConfig, parse_settings, resolve_learn_prompts


def parse(argv: list[str] | None = None) -> tuple[LearnPromptsConfig, str | None]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=None)
    p.add_argument("--input", help="labelled images: PATH.jsonl | DIR | voc:ROOT[:SPLIT] | coco:ROOT:ANN.json "
                                   "(default: 400 generated toy-world train images)")
    p.add_argument("--labelset", help="voc | coco | toyworld | PATH.yaml (default: toyworld)")
    p.add_argument("--model", help="toyclip | local-dir:PATH | hf-hub:ORG/REPO | open_clip name (default: toyclip)")
    p.add_argument("--pretrained", help="pretrained tag or local weights file for an open_clip name")
    p.add_argument("--output", help="folder or URI for prompts.safetensors and the run (default: outputs/prompts)")
    p.add_argument("--limit", type=int, help="learn from at most N images")
    p.add_argument("--length", type=int, help="tokens per prompt (default: 30, SemPLeS's; capped by the context)")
    p.add_argument("--text-weight", type=float, help="lambda, the push away from the class text (default: 0.02)")
    p.add_argument("--lr", type=float, help="AdamW learning rate before the batch/512 scaling (default: 0.1)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (default: 0)")
    p.add_argument("--batch-size", type=int, help="(image, class) pairs per step over all workers (default: 128)")
    p.add_argument("--epochs", type=int, help="passes over the pairs (default: 60)")
    p.add_argument("--num-workers", type=int,
                   help="Ray Train workers, and at most as many CAM actors for the backgrounds (default: 1)")
    p.add_argument("--use-gpu", action="store_const", const=True,
                   help="one GPU per worker and for the CAMs (default: when the cluster has GPUs or its autoscaler can start some)")
    p.add_argument("--no-gpu", dest="use_gpu", action="store_const", const=False, help="CPU only")
    p.add_argument("--seed", type=int, help="initialisation and shuffling seed (default: 0)")
    return parse_settings(p, argv, resolve_learn_prompts)


def main(argv: list[str] | None = None) -> int:
    config, mlflow_uri = parse(argv)
    import ray

    from wsss_ray.ray_compat import quiet_known_ray_errors
    from wsss_ray.train.prompts import run_tracked

    with quiet_known_ray_errors():
        ray.init(ignore_reinit_error=True)
        print(json.dumps(run_tracked(config, mlflow_uri)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
