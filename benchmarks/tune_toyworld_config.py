"""Choose the toy world's label settings on the val split (never the test split).

Greedy, one group of settings at a time, each scored by mIoU on val images:
the prompt template (sharpness), scales and background power on CAMs, then
CAA, then the CRF kernel. Prints every
trial and writes the winner to wsss_ray/configs/toyworld.yaml, which the toy-world
runs and benchmarks use (`--config`).

    .venv/bin/python benchmarks/tune_toyworld_config.py [--n 200] [--model toyclip]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import yaml

from wsss_ray.cam.prompts import select_templates
from wsss_ray.clip import load_clip
from wsss_ray.crf import CrfConfig
from wsss_ray.labeler import LabelConfig, Labeler
from wsss_ray.labelset import load_labelset
from wsss_ray.toyworld.evaluate import evaluate, split_samples

SCALES = ((1.0,), (1.0, 2.0), (1.0, 1.5, 2.0), (0.75, 1.0, 1.5, 2.0))
CRFS = {
    "default (1,1 | 20,10,1)": CrfConfig(),
    "clip-es (1,3 | 67,3,4)": CrfConfig(gauss_sxy=1, gauss_compat=3, bilateral_sxy=67, bilateral_srgb=3, bilateral_compat=4),
    "(3,3 | 50,5,4)": CrfConfig(gauss_sxy=3, gauss_compat=3, bilateral_sxy=50, bilateral_srgb=5, bilateral_compat=4),
    "(3,3 | 30,10,8)": CrfConfig(gauss_sxy=3, gauss_compat=3, bilateral_sxy=30, bilateral_srgb=10, bilateral_compat=8),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--model", default="toyclip")
    parser.add_argument("--out", default="wsss_ray/configs/toyworld.yaml")
    args = parser.parse_args()
    clip, labelset, samples = load_clip(args.model), load_labelset("toyworld"), split_samples("val", args.n)

    def score(cfg: LabelConfig, name: str) -> float:
        miou = evaluate(Labeler(clip, labelset, cfg), samples).miou
        print(f"{miou:.3f}  {name}", flush=True)
        return miou

    ranking = select_templates(clip, [s.image for s in samples],
                               [[labelset.index(l) for l in s.labels] for s in samples], labelset)
    print(f"selected template on val: {ranking[0][0]!r}")
    best = LabelConfig(crf=False, caa=False, confidence_threshold=None, templates=(ranking[0][0],))
    groups = (  # each builds its trials from the best config so far
        lambda b: {**{f"scales={s}, bg_power={p}": b.with_(scales=s, bg_power=p)
                      for s in SCALES for p in (0.5, 1.0, 2.0)},
                   **{f"scales={s}, bg_threshold={t}": b.with_(scales=s, bg_threshold=t)
                      for s in SCALES for t in (0.3, 0.5)}},
        lambda b: {"caa off": b, **{f"caa {src}, layers={l}": b.with_(caa=True, caa_source=src, caa_layers=l)
                                    for src in ("attention", "keys") for l in (None, 2)}},
        lambda b: {"crf off": b, **{f"crf {name}": b.with_(crf=True, crf_config=c) for name, c in CRFS.items()}},
    )
    for make in groups:
        trials = make(best)
        results = {name: score(cfg, name) for name, cfg in trials.items()}
        best = trials[max(results, key=results.get)]
    chosen = {k: v for k, v in dataclasses.asdict(best.with_(confidence_threshold=0.95)).items()
              if v != dataclasses.asdict(LabelConfig()).get(k)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    header = "# Toy-world label settings chosen on the val split by benchmarks/tune_toyworld_config.py\n"
    Path(args.out).write_text(header + yaml.safe_dump(_plain(chosen), sort_keys=False))
    print(f"wrote {args.out}: {chosen}")


def _plain(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


if __name__ == "__main__":
    main()
