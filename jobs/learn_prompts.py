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

import sys

from wsss_ray.cli import JobParser, run_job
from wsss_ray.config import LearnPromptsConfig


def parse(argv: list[str] | None = None) -> tuple[LearnPromptsConfig, str | None]:
    p = JobParser(__doc__, LearnPromptsConfig)
    p.flag("input", "labelled images: PATH.jsonl | DIR | voc:ROOT[:SPLIT] | coco:ROOT:ANN.json "
                    "(default: 400 generated toy-world train images)")
    p.shared("labelset", "model", "pretrained")
    p.flag("output", "folder or URI for prompts.safetensors and the run")
    p.shared("limit", limit="learn from at most N images")
    p.flag("length", "tokens per prompt (SemPLeS's; capped by the context)", type=int)
    p.flag("text_weight", "lambda, the push away from the class text", type=float)
    p.shared("lr", lr="AdamW learning rate before the batch/512 scaling")
    p.flag("weight_decay", "AdamW weight decay", type=float)
    p.flag("batch_size", "(image, class) pairs per step over all workers", type=int)
    p.shared("epochs", "num_workers", "seed", epochs="passes over the pairs",
             num_workers="Ray Train workers, and at most as many CAM actors for the backgrounds")
    p.gpu_flags("one GPU per worker and for the CAMs")
    return p.parse(argv)


def main(argv: list[str] | None = None) -> int:
    config, mlflow_uri = parse(argv)
    return run_job("learn_prompts", config, "wsss_ray.train.prompts:run_tracked", mlflow_uri)


if __name__ == "__main__":
    sys.exit(main())
