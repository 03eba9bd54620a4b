"""Which signals, available in the job without ground truth, say how good a pseudo-mask is?

Labels the toy world's val and test splits with toyclip's own settings (its
label_config.yaml), computes per image a set of candidate signals from what the job
has (CAMs, the probabilities before and after the dense CRF, the mask and its
confidence), and scores each against the image's own mIoU with its exact mask
(mean IoU over the classes in the truth or the mask, background included):

- Spearman's rho between the signal and the image's mIoU;
- enrichment: the share of the worst 20 % of masks (by true mIoU) among the lowest-scored
  10 %, divided by their share in a random 10 % (1.0 = chance; 5.0 = perfect).

The combined score is a least-squares fit of the true mIoU on the standardised signals,
fitted on val only and scored on test. Per (image, label) the same for a label's IoU.

    .venv/bin/python benchmarks/quality_score.py [--val 300] [--test 500]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from wsss_ray.crf import crf_within_budget
from wsss_ray.labeler import Labeler
from wsss_ray.masks import class_values
from wsss_ray.toyworld import CLASSES, render
from wsss_ray.toyworld.world import SPLIT_SEEDS

SMALL = 0.001  # a label whose mask covers less of the image than this is counted as missing


def image_miou(truth: np.ndarray, mask: np.ndarray) -> float:
    ious = []
    for c in np.union1d(np.unique(truth), np.unique(mask)):
        t, m = truth == c, mask == c
        ious.append((t & m).sum() / (t | m).sum())
    return float(np.mean(ious))


def signals(cams: np.ndarray, probs: np.ndarray, marginals: np.ndarray, values: np.ndarray) -> tuple[dict, list]:
    """Per-image signals and per-label signals from one image's CAMs, probabilities and CRF marginals."""
    order = np.sort(marginals, axis=0)
    top, second = order[-1], order[-2] if len(order) > 1 else np.zeros_like(order[-1])
    arg = marginals.argmax(0)
    before = probs.argmax(0)
    entropy = -(marginals * np.log(marginals + 1e-9)).sum(0) / np.log(max(len(marginals), 2))
    per_label = []
    for k in range(cams.shape[0]):
        region = arg == k + 1
        area = region.mean()
        cam_region = cams[k] >= 0.5
        agree = (region & cam_region).sum() / max((region | cam_region).sum(), 1)
        per_label.append({
            "area": float(area), "missing": float(area < SMALL),
            "confidence_in_region": float(top[region].mean()) if region.any() else 0.0,
            "cam_agreement": float(agree), "cam_mean": float(cams[k].mean()),
            "margin_in_region": float((top - second)[region].mean()) if region.any() else 0.0,
            "kept_by_crf": float((before == k + 1)[region].mean()) if region.any() else 0.0,
        })
    image = {
        "confidence_mean": float(top.mean()), "confidence_above_0.95": float((top >= 0.95).mean()),
        "margin_mean": float((top - second).mean()), "entropy_mean": float(entropy.mean()),
        "crf_changed": float((before != arg).mean()), "background": float((arg == 0).mean()),
        "labels": float(cams.shape[0]),
        "missing_labels": float(np.mean([p["missing"] for p in per_label])) if per_label else 0.0,
        "cam_agreement": float(np.mean([p["cam_agreement"] for p in per_label])) if per_label else 1.0,
        "cam_mean": float(np.mean([p["cam_mean"] for p in per_label])) if per_label else 0.0,
        "label_confidence_min": float(min(p["confidence_in_region"] for p in per_label)) if per_label else 1.0,
    }
    return image, per_label


def enrichment(score: np.ndarray, truth: np.ndarray) -> float:
    """Share of the worst 20 % (by truth) among the lowest-scored 10 %, over its share in a random 10 % (0.2)."""
    n = len(score)
    worst = set(np.argsort(truth, kind="stable")[: max(1, n // 5)])
    flagged = np.argsort(score, kind="stable")[: max(1, n // 10)]
    return float(np.mean([i in worst for i in flagged]) / 0.2)


def clip_label_probs(labeler, images: list[np.ndarray]) -> np.ndarray:
    """CLIP's zero-shot probabilities of every labelset class for each image (softmax over the classes)."""
    import torch

    from wsss_ray.cam.gradcam import to_model_input

    clip = labeler.method.clip
    size = clip.model.visual.image_size
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    with torch.no_grad():
        x = torch.stack([to_model_input(im, size, clip.mean, clip.std) for im in images])
        feats = torch.nn.functional.normalize(clip.model.encode_image(x).float(), dim=-1)
        logits = clip.model.logit_scale.exp() * feats @ labeler.method.text.classes.float().T
    return logits.softmax(-1).numpy()


def masks_of(labeler, images, labels) -> list[np.ndarray]:
    cams = labeler.cams(images, labels)
    out = []
    for image, lab, probs in zip(images, labels, labeler.probs(cams)):
        marginals, _ = crf_within_budget(image, probs, labeler.post.crf)
        out.append(class_values(labeler.class_ids(lab))[marginals.argmax(0)])
    return out


def rows(split: str, n: int, offset: int = 0) -> tuple[list[dict], list[dict]]:
    """(per-image rows, per-label rows) of `n` images of `split`: signals and the true scores."""
    labeler = Labeler.from_spec("toyclip", "toyworld", precision="fp32")
    samples = [render(SPLIT_SEEDS[split] + offset + i) for i in range(n)]
    images, per_label = [], []
    for start in range(0, n, 32):
        batch = samples[start:start + 32]
        pixels, labels = [s.image for s in batch], [list(s.labels) for s in batch]
        cams = labeler.cams(pixels, labels)
        zero_shot = clip_label_probs(labeler, pixels)
        flipped = [m[:, ::-1] for m in masks_of(labeler, [np.ascontiguousarray(p[:, ::-1]) for p in pixels], labels)]
        for j, (s, cam, probs) in enumerate(zip(batch, cams, labeler.probs(cams))):
            ids = labeler.class_ids(list(s.labels))
            marginals, _ = crf_within_budget(s.image, probs, labeler.post.crf)
            values = class_values(ids)
            mask = values[marginals.argmax(0)]
            image, label_rows = signals(cam, probs, marginals, values)
            label_probs = [float(zero_shot[j, i]) for i in ids]
            flip = [float(((mask == v) & (flipped[j] == v)).sum() / max(((mask == v) | (flipped[j] == v)).sum(), 1))
                    for v in values]
            image.update(clip_min=min(label_probs), clip_sum=sum(label_probs), flip_miou=float(np.mean(flip)),
                         flip_min=float(min(flip[1:] or [1.0])))
            images.append({**image, "truth": image_miou(s.mask, mask)})
            for k, label in enumerate(label_rows):
                value = values[k + 1]
                t, m = s.mask == value, mask == value
                per_label.append({**label, "clip": label_probs[k], "flip_iou": flip[k + 1], "class": CLASSES[ids[k]],
                                  "truth": float((t & m).sum() / max((t | m).sum(), 1))})
    return images, per_label


def fit(train: list[dict], keys: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.array([[r[k] for k in keys] for r in train])
    mean, std = x.mean(0), x.std(0) + 1e-9
    design = np.c_[(x - mean) / std, np.ones(len(x))]
    weights, *_ = np.linalg.lstsq(design, np.array([r["truth"] for r in train]), rcond=None)
    return weights, mean, std


def predict(model, rows_: list[dict], keys: list[str]) -> np.ndarray:
    weights, mean, std = model
    x = np.array([[r[k] for k in keys] for r in rows_])
    return np.c_[(x - mean) / std, np.ones(len(x))] @ weights


def report(title: str, val: list[dict], test: list[dict], only: list[str] | None = None) -> dict:
    keys = [k for k in test[0] if k not in ("truth", "class") and (not only or k in only)]
    truth = np.array([r["truth"] for r in test])
    print(f"\n{title}: {len(val)} val, {len(test)} test\n| signal | rho (test) | enrichment (test) |\n|---|---|---|")
    out = {}
    for k in keys:
        score = np.array([r[k] for r in test])
        sign = np.sign(spearmanr([r[k] for r in val], [r["truth"] for r in val])[0]) or 1.0  # direction from val
        rho, enr = spearmanr(sign * score, truth)[0], enrichment(sign * score, truth)
        out[k] = (round(float(rho), 3), round(enr, 2))
        print(f"| {k} ({'+' if sign > 0 else '-'}) | {rho:.3f} | {enr:.2f} |")
    model = fit(val, keys)
    combined = predict(model, test, keys)
    rho, enr = spearmanr(combined, truth)[0], enrichment(combined, truth)
    out["combined"] = (round(float(rho), 3), round(enr, 2))
    print(f"| **combined (least squares on val)** | {rho:.3f} | {enr:.2f} |")
    print("weights (standardised): " + ", ".join(f"{k} {w:+.3f}" for k, w in zip(keys, model[0])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--val", type=int, default=300)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--signals", nargs="+", help="combine only these signals (default: all)")
    parser.add_argument("--rows", help="a JSON file of the computed signals: written once, read after")
    args = parser.parse_args()
    if args.rows and Path(args.rows).is_file():
        computed = json.loads(Path(args.rows).read_text())
    else:
        computed = {"val": rows("val", args.val), "test": rows("test", args.test)}
        if args.rows:
            Path(args.rows).write_text(json.dumps(computed))
    (val_images, val_labels), (test_images, test_labels) = computed["val"], computed["test"]
    result = {"image": report("per image (quality)", val_images, test_images, args.signals),
              "label": report("per label (label_quality)", val_labels, test_labels, args.signals)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
