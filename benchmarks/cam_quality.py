"""Pseudo-mask quality of each CLIP-ES component on the toy world's test split.

Every row is scored against the exact masks with one confusion matrix over the
split (background + 8 classes, mIoU). Rows add one component at a time, as the
CLIP-ES ablation does; the two trivial baselines use only the image-level labels.
The full pipeline is the model's own label settings (toyclip's bundled
label_config.yaml) overridden by --config; the CAM rows keep its scales and
background score. Masks are the full argmax (no confidence threshold).

    .venv/bin/python benchmarks/cam_quality.py [--n 500] [--model toyclip] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch

from wsss_ray.cam import ClipES
from wsss_ray.cam.prompts import select_templates
from wsss_ray.clip import load_clip
from wsss_ray.config import ClipESConfig, PostConfig, resolve_label_job
from wsss_ray.labeler import Labeler
from wsss_ray.labelset import load_labelset
from wsss_ray.metrics import accumulate, scores
from wsss_ray.toyworld.evaluate import evaluate, split_samples


def whole_image_baseline(samples, labelset, blob: bool = False) -> float:
    """Each image's mask = its labels filled over the whole image (or a centred ellipse).

    With several labels the image is split into vertical bands, one per label, so
    every label gets some pixels; this is the best a label-only guess can do cheaply.
    """
    def guess(s) -> np.ndarray:
        h, w = s.mask.shape
        pred = np.zeros((h, w), np.uint8)
        ids = [labelset.index(l) + 1 for l in s.labels]
        for i, c in enumerate(ids):
            pred[:, i * w // len(ids):(i + 1) * w // len(ids)] = c
        if blob:
            yy, xx = np.mgrid[0:h, 0:w]
            inside = ((yy - h / 2) / (h * 0.3)) ** 2 + ((xx - w / 2) / (w * 0.3)) ** 2 <= 1
            pred[~inside] = 0
        return pred

    return scores(accumulate(((s.mask, guess(s)) for s in samples), len(labelset) + 1)).miou


def selected_template(clip, labelset, n: int = 200) -> str:
    """The sharpest candidate template on n val-split images (never the test split)."""
    samples = split_samples("val", n)
    ranking = select_templates(clip, [s.image for s in samples],
                               [[labelset.index(l) for l in s.labels] for s in samples], labelset)
    return ranking[0][0]


def rows(method: ClipESConfig, post: PostConfig, template: str) -> list[tuple[str, ClipESConfig, PostConfig]]:
    """The ablation, one component added per row (CAM rows without CRF; masks are the full argmax).

    (`method`, `post`) is the full pipeline; the CAM rows switch its parts off from the top.
    """
    cam = replace(method, caa=False, templates=None, caa_source="attention")
    no_crf = replace(post, crf=replace(post.crf, iters=0))
    return [(name, m, no_crf) for name, m in [
        ("Grad-CAM of the raw logit, class names only", replace(cam, score="logit", synonym_fusion="name",
                                                                background_words=False, softmax_over="all")),
        ("softmax-GradCAM (all classes)", replace(cam, synonym_fusion="name", background_words=False,
                                                  softmax_over="all")),
        ("+ present classes only in the softmax", replace(cam, synonym_fusion="name", background_words=False)),
        ("+ synonyms", replace(cam, background_words=False)),
        ("+ background words", cam),
        (f"+ selected prompt ({template!r})", replace(cam, templates=(template,))),
        ("+ CAA", replace(cam, templates=(template,), caa=True, caa_source="attention")),
        ("+ CAA on key similarity", replace(cam, templates=(template,), caa=True, caa_source="keys")),
    ]] + [("+ dense CRF (full pipeline, --config settings)", replace(method, templates=(template,)), post)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="test-split images")
    parser.add_argument("--model", default="toyclip")
    parser.add_argument("--config", default=None,
                        help="settings YAML (clip_es: {...}, post: {...}) over the model's own label settings "
                             "(toyclip's bundled label_config.yaml) for the full pipeline")
    args = parser.parse_args()
    torch.manual_seed(0)
    labelset = load_labelset("toyworld")
    samples = split_samples("test", args.n)
    clip = load_clip(args.model)
    config = resolve_label_job({"model": args.model, "labelset": "toyworld", "method": "clip-es"}, args.config)
    print(f"toy world test split, {args.n} images, model {args.model}")
    print("| pseudo-masks | mIoU |\n|---|---|")
    results = {"whole image = labels": whole_image_baseline(samples, labelset),
               "centred blob = labels": whole_image_baseline(samples, labelset, blob=True)}
    for name, value in results.items():
        print(f"| baseline: {name} | {value:.3f} |", flush=True)
    template = selected_template(clip, labelset)
    for name, method, post in rows(config.method_config, config.post, template):
        t = time.time()
        results[name] = evaluate(Labeler(ClipES(method, clip, labelset), post), samples).miou
        print(f"| {name} | {results[name]:.3f} |  ({time.time() - t:.0f} s)", flush=True)
    print(json.dumps({k: round(v, 4) for k, v in results.items()}))


if __name__ == "__main__":
    main()
