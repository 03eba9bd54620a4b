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
fitted on val only and scored on test; it prints the fit in ``post.quality``'s form
(QualityConfig's defaults are this fit). Per (image, label) the same for a label's IoU.

``--job N`` measures what the labelling job writes instead: N test images through
``wsss_ray.pipeline.run`` (local Ray, toyclip's settings), the ``quality`` and
``label_quality`` columns against each mask's own mIoU (per label: IoU), overall and per class.

    .venv/bin/python benchmarks/quality_score.py [--val 300] [--test 500]
    .venv/bin/python benchmarks/quality_score.py --job 500
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from wsss_ray.crf import crf_within_budget, resize_probs
from wsss_ray.labeler import Labeler
from wsss_ray.masks import class_values
from wsss_ray.quality import signals
from wsss_ray.toyworld import CLASSES, render
from wsss_ray.toyworld.world import SPLIT_SEEDS

def image_miou(truth: np.ndarray, mask: np.ndarray) -> float:
    ious = []
    for c in np.union1d(np.unique(truth), np.unique(mask)):
        t, m = truth == c, mask == c
        ious.append((t & m).sum() / (t | m).sum())
    return float(np.mean(ious))


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


def rows(split: str, n: int, extras: bool = False) -> tuple[list[dict], list[dict]]:
    """(per-image rows, per-label rows) of `n` images of `split`: signals and the true scores.

    `extras`: also signals the job does not compute (CLIP's zero-shot probabilities of the
    labels; agreement with the mask of the mirrored image, a second labelling pass)."""
    labeler = Labeler.from_spec("toyclip", "toyworld", precision="fp32")
    samples = [render(SPLIT_SEEDS[split] + i) for i in range(n)]
    images, per_label = [], []
    for start in range(0, n, 32):
        batch = samples[start:start + 32]
        pixels, labels = [s.image for s in batch], [list(s.labels) for s in batch]
        cams = labeler.cams(pixels, labels)
        if extras:
            zero_shot = clip_label_probs(labeler, pixels)
            flipped = [m[:, ::-1] for m in masks_of(labeler, [np.ascontiguousarray(p[:, ::-1]) for p in pixels], labels)]
        for j, (s, cam, probs) in enumerate(zip(batch, cams, labeler.probs(cams))):
            ids = labeler.class_ids(list(s.labels))
            marginals, _ = crf_within_budget(s.image, probs, labeler.post.crf)
            values = class_values(ids)
            mask = values[marginals.argmax(0)]
            image, label_rows = signals(resize_probs(probs, marginals.shape[1:]), marginals)
            if extras:
                label_probs = [float(zero_shot[j, i]) for i in ids]
                flip = [float(((mask == v) & (flipped[j] == v)).sum() / max(((mask == v) | (flipped[j] == v)).sum(), 1))
                        for v in values]
                image.update(clip_min=min(label_probs), clip_sum=sum(label_probs), flip_miou=float(np.mean(flip)),
                             flip_min=float(min(flip[1:] or [1.0])))
                for k, label in enumerate(label_rows):
                    label.update(clip=label_probs[k], flip_iou=flip[k + 1])
            images.append({**image, "truth": image_miou(s.mask, mask)})
            for k, label in enumerate(label_rows):
                value = values[k + 1]
                t, m = s.mask == value, mask == value
                per_label.append({**label, "class": CLASSES[ids[k]],
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
    return out, model, keys


def raw(model, keys: list[str]) -> tuple[dict, float]:
    """A fit on standardised signals as weights on the raw signals and a bias (QualityConfig's form)."""
    weights, mean, std = model
    w = weights[:-1] / std
    return {k: round(float(v), 5) for k, v in zip(keys, w)}, round(float(weights[-1] - (w * mean).sum()), 5)


def job_scores(n: int, workdir: str) -> None:
    """The job's own quality columns on `n` test images, against the exact masks."""
    import shutil

    import ray

    from wsss_ray.config import resolve_label_job
    from wsss_ray.masks import decode_png
    from wsss_ray.store import read_output
    from wsss_ray.pipeline import run
    from wsss_ray.store import load_mask, read_source
    from wsss_ray.toyworld import default_collection

    shutil.rmtree(workdir, ignore_errors=True)
    manifest = default_collection("test", n, f"{workdir}/toyworld-test")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    summary = run(resolve_label_job({"model": "toyclip", "input": manifest, "output": f"{workdir}/pseudolabels"}))
    ray.shutdown()
    truth = {it.id: it.mask for it in read_source(manifest)}
    table = read_output(f"{workdir}/pseudolabels", ["id", "status", "labels", "mask", "quality", "label_quality"])
    quality, miou, label_rows = [], [], []
    for row in table.to_pylist():
        if row["status"] != "ok":
            continue
        gt, mask = load_mask(truth[row["id"]]), decode_png(row["mask"])
        quality.append(row["quality"])
        miou.append(image_miou(gt, mask))
        for name, q in zip(row["labels"], row["label_quality"]):
            value = CLASSES.index(name) + 1
            t, m = gt == value, mask == value
            label_rows.append((name, q, float((t & m).sum() / max((t | m).sum(), 1))))
    quality, miou = np.array(quality), np.array(miou)
    print(f"\nthe job's columns: {len(quality)} ok rows of {summary['rows']}, job mIoU {summary.get('miou')}")
    print(f"quality: rho {spearmanr(quality, miou)[0]:.3f}, enrichment {enrichment(quality, miou):.2f}, "
          f"clipped to 0 or 1: {np.mean((quality <= 0) | (quality >= 1)):.1%}")
    q, iou = np.array([r[1] for r in label_rows]), np.array([r[2] for r in label_rows])
    print(f"label_quality, all labels: rho {spearmanr(q, iou)[0]:.3f}, enrichment {enrichment(q, iou):.2f} "
          f"({len(q)} labels)\n\n| class | labels | rho | enrichment | mean IoU | mean label_quality |\n|---|---|---|---|---|---|")
    for name in CLASSES:
        sel = [r for r in label_rows if r[0] == name]
        if len(sel) >= 10:
            q, iou = np.array([r[1] for r in sel]), np.array([r[2] for r in sel])
            print(f"| {name} | {len(sel)} | {spearmanr(q, iou)[0]:.3f} | {enrichment(q, iou):.2f} | {iou.mean():.3f} | "
                  f"{q.mean():.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--val", type=int, default=300)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--signals", nargs="+", help="combine only these signals (default: all)")
    parser.add_argument("--rows", help="a JSON file of the computed signals: written once, read after")
    parser.add_argument("--extras", action="store_true",
                        help="also signals the job does not compute: CLIP zero-shot, a mirrored second pass")
    parser.add_argument("--job", type=int, metavar="N", help="measure the job's own columns on N test images")
    parser.add_argument("--workdir", default="outputs/bench-quality", help="--job: wiped first")
    args = parser.parse_args()
    if args.job:
        return job_scores(args.job, args.workdir)
    if args.rows and Path(args.rows).is_file():
        computed = json.loads(Path(args.rows).read_text())
    else:
        computed = {"val": rows("val", args.val, args.extras), "test": rows("test", args.test, args.extras)}
        if args.rows:
            Path(args.rows).write_text(json.dumps(computed))
    (val_images, val_labels), (test_images, test_labels) = computed["val"], computed["test"]
    image, image_model, image_keys = report("per image (quality)", val_images, test_images, args.signals)
    label, label_model, label_keys = report("per label (label_quality)", val_labels, test_labels, args.signals)
    print(json.dumps({"image": image, "label": label}))
    weights, bias = raw(image_model, image_keys)
    label_weights, label_bias = raw(label_model, label_keys)
    print("\npost.quality fitted on val (QualityConfig's defaults):")
    print(json.dumps({"weights": weights, "bias": bias, "label_weights": label_weights, "label_bias": label_bias},
                     indent=1))


if __name__ == "__main__":
    main()
