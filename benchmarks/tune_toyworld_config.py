"""Choose the toy world's label settings on the val split (never the test split).

Greedy, one group of settings at a time, each scored by mIoU on val images:
the prompt template (sharpness), scales and background power on CAMs, then
CAA, then the CRF kernel. Prints every trial and writes the winner as a settings
YAML (``method``, its ``clip_es`` section and ``post``, every field written out) to
--out, default outputs/toyworld_label_config.yaml; it never writes into the
package. Use it with ``--config`` (jobs/pseudolabel.py, benchmarks/cam_quality.py,
benchmarks/cam_grid.py), or review it and copy it over
wsss_ray/weights/toyclip/label_config.yaml to make it toyclip's default.

    .venv/bin/python benchmarks/tune_toyworld_config.py [--n 200] [--model toyclip] [--out FILE]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import yaml

from wsss_ray.cam import ClipES
from wsss_ray.cam.prompts import select_templates
from wsss_ray.clip import load_clip
from wsss_ray.config import ClipESConfig, CrfConfig, LabelJobConfig, PostConfig, flatten, settings_dict
from wsss_ray.files import atomic_write
from wsss_ray.labeler import Labeler
from wsss_ray.labelset import load_labelset
from wsss_ray.toyworld.evaluate import evaluate, split_samples

SCALES = ((1.0,), (1.0, 2.0), (1.0, 1.5, 2.0), (0.75, 1.0, 1.5, 2.0))
CRFS = {
    "previous default (1,1 | 20,10,1)": CrfConfig(iters=10, gauss_sxy=1, gauss_compat=1, bilateral_sxy=20,
                                                  bilateral_srgb=10, bilateral_compat=1),
    "clip-es (1,3 | 67,3,4)": CrfConfig(iters=10, gauss_sxy=1, gauss_compat=3, bilateral_sxy=67, bilateral_srgb=3,
                                        bilateral_compat=4),
    "(3,3 | 50,5,4)": CrfConfig(gauss_sxy=3, gauss_compat=3, bilateral_sxy=50, bilateral_srgb=5, bilateral_compat=4),
    "(3,3 | 30,10,8)": CrfConfig(gauss_sxy=3, gauss_compat=3, bilateral_sxy=30, bilateral_srgb=10, bilateral_compat=8),
}

Trial = tuple[ClipESConfig, PostConfig]  # the method's settings, the post-processing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--model", default="toyclip")
    parser.add_argument("--out", default="outputs/toyworld_label_config.yaml",
                        help="settings YAML to write the winner to (never the package's files)")
    args = parser.parse_args()
    clip, labelset, samples = load_clip(args.model), load_labelset("toyworld"), split_samples("val", args.n)

    def score(trial: Trial, name: str) -> float:
        method, post = trial
        miou = evaluate(Labeler(ClipES(method, clip, labelset), post), samples).miou
        print(f"{miou:.3f}  {name}", flush=True)
        return miou

    ranking = select_templates(clip, [s.image for s in samples],
                               [[labelset.index(l) for l in s.labels] for s in samples], labelset)
    print(f"selected template on val: {ranking[0][0]!r}")
    best: Trial = (ClipESConfig(caa=False, templates=(ranking[0][0],)), PostConfig(crf=CrfConfig(iters=0)))
    groups = (  # each builds its trials from the best (method, post) so far
        lambda m, p: {**{f"scales={s}, bg_power={w}": (replace(m, scales=s), replace(p, bg_power=w))
                         for s in SCALES for w in (0.5, 1.0, 2.0)},
                      **{f"scales={s}, bg_threshold={t}": (replace(m, scales=s), replace(p, bg_threshold=t))
                         for s in SCALES for t in (0.3, 0.5)}},
        lambda m, p: {"caa off": (m, p),
                      **{f"caa {src}, layers={l}": (replace(m, caa=True, caa_source=src, caa_layers=l), p)
                         for src in ("attention", "keys") for l in (None, 2)}},
        lambda m, p: {"crf off": (m, p), **{f"crf {name}": (m, replace(p, crf=c)) for name, c in CRFS.items()}},
    )
    for make in groups:
        trials = make(*best)
        results = {name: score(trial, name) for name, trial in trials.items()}
        best = trials[max(results, key=results.get)]
    chosen = LabelJobConfig(model=args.model, labelset="toyworld", method_config=best[0], post=best[1])
    settings = settings_dict(chosen, label_only=True)
    header = ("# Toy-world label settings chosen on the val split by benchmarks/tune_toyworld_config.py\n"
              f"# (--model {args.model}, --n {args.n}); every field written out, so the file means the same\n"
              "# whatever defaults it is layered over. Use with --config.\n")
    atomic_write(args.out, (header + yaml.safe_dump(settings, sort_keys=False)).encode())
    defaults = flatten(settings_dict(LabelJobConfig(), label_only=True))
    changed = {k: v for k, v in flatten(settings).items() if defaults.get(k) != v}
    print(f"wrote {args.out}; changed from the library defaults: {changed}")


if __name__ == "__main__":
    main()
