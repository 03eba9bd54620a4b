"""Does a model's bundled label_config.yaml give a user good masks without any --config?

Labels a fresh toy-world test collection (seeds no other benchmark or default run
uses) with the labelling job three ways and scores each against the exact masks:

- ``--model toyclip`` and no ``--config``: the settings toyclip ships with;
- the CLIP-ES reference defaults (what any other model gets), forced on toyclip;
- the centred-blob baseline: each image's labels in a centred ellipse.

    .venv/bin/python benchmarks/model_defaults.py --n 500
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="test images")
    parser.add_argument("--offset", type=int, default=50_000, help="first seed after the test split's start")
    args = parser.parse_args(argv)

    import ray

    from cam_quality import whole_image_baseline
    from wsss_ray.config import LabelJobConfig, resolve_label_job
    from wsss_ray.labelset import load_labelset
    from wsss_ray.pipeline import run
    from wsss_ray.toyworld import SPLIT_SEEDS, generate, render

    work = Path(tempfile.mkdtemp(prefix="model-defaults-"))
    manifest = str(generate(work / "toy", args.n, seed=SPLIT_SEEDS["test"] + args.offset))
    bundled = resolve_label_job({"input": manifest, "output": str(work / "bundled")})  # model: toyclip
    reference = LabelJobConfig(input=manifest, output=str(work / "reference"))       # the dataclass defaults
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results = {"toyclip, no --config (its label_config.yaml)": run(bundled)["miou"],
                   "toyclip with the CLIP-ES reference defaults": run(reference)["miou"]}
    finally:
        ray.shutdown()
    samples = [render(SPLIT_SEEDS["test"] + args.offset + i) for i in range(args.n)]
    results["baseline: centred blob of the labels"] = round(whole_image_baseline(samples, load_labelset("toyworld"),
                                                                                  blob=True), 4)
    print(f"| {args.n} test images (seeds test+{args.offset}...) | mIoU |\n|---|---|")
    for name, miou in results.items():
        print(f"| {name} | {miou:.4f} |")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
