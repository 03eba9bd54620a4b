"""Evaluation: confusion matrix, IoU/mIoU, precision/recall, average precision.

One implementation for every evaluation in the project. Segmentation scores come
from a confusion matrix accumulated over a whole split (as the CLIP-ES and
deeplab-pytorch evaluations do), not from a mean of per-image scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from wsss_ray.labelset import IGNORE_INDEX


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """num_classes x num_classes int64 counts, rows = ground truth, columns = prediction.

    Pixels whose ground truth is outside [0, num_classes) (255 = ignore) are skipped.
    A prediction outside [0, num_classes) (e.g. an ignored pseudo-label pixel) is an
    error: pass it through :func:`fill_ignored` first or count it explicitly.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    gt = gt.astype(np.int64).ravel()
    pred = pred.astype(np.int64).ravel()
    keep = (gt >= 0) & (gt < num_classes)
    gt, pred = gt[keep], pred[keep]
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"prediction values must lie in [0, {num_classes}); map ignore (255) first")
    return np.bincount(num_classes * gt + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def fill_ignored(pred: np.ndarray, value: int = 0) -> np.ndarray:
    """Replace ignore (255) in a prediction by `value` (background by default) for scoring."""
    return np.where(pred == IGNORE_INDEX, value, pred).astype(pred.dtype)


def accumulate(pairs: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int) -> np.ndarray:
    """The confusion matrix of a split: summed over (ground truth, prediction) mask pairs.

    The one evaluation path of the project (labelling job, toy-world benchmarks,
    training's val mIoU). Ignored (255) prediction pixels count as background.
    """
    hist = np.zeros((num_classes, num_classes), np.int64)
    for truth, pred in pairs:
        hist += confusion_matrix(truth, fill_ignored(pred), num_classes)
    return hist


@dataclass(frozen=True)
class SegScores:
    """Scores from one confusion matrix; per-class arrays are NaN where undefined."""

    iou: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    pixel_accuracy: float

    @property
    def miou(self) -> float:
        return float(np.nanmean(self.iou))

    def as_dict(self, names: list[str] | tuple[str, ...] | None = None) -> dict:
        names = names or [str(i) for i in range(len(self.iou))]
        return {"miou": self.miou, "pixel_accuracy": self.pixel_accuracy,
                "iou": {n: _f(v) for n, v in zip(names, self.iou)},
                "precision": {n: _f(v) for n, v in zip(names, self.precision)},
                "recall": {n: _f(v) for n, v in zip(names, self.recall)}}


def _f(v: float) -> float | None:
    return None if np.isnan(v) else float(v)


def scores(hist: np.ndarray) -> SegScores:
    """IoU, precision and recall per class from a confusion matrix.

    IoU_c = TP / (TP + FP + FN). Classes with no ground-truth pixels get NaN IoU and
    recall (as CLIP-ES's ``nanmean`` over ``hist.sum(1) > 0``), so mIoU averages the
    classes present in the evaluated split.
    """
    hist = hist.astype(np.float64)
    tp = np.diag(hist)
    gt = hist.sum(1)
    pred = hist.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(gt > 0, tp / (gt + pred - tp), np.nan)
        precision = np.where(pred > 0, tp / pred, np.nan)
        recall = np.where(gt > 0, tp / gt, np.nan)
    total = hist.sum()
    return SegScores(iou, precision, recall, float(tp.sum() / total) if total else float("nan"))


def average_precision(truth: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve (precision averaged at each true positive)."""
    truth = np.asarray(truth, bool)
    if not truth.any():
        return float("nan")
    order = np.argsort(-np.asarray(score, np.float64), kind="stable")
    hits = truth[order]
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at[hits].mean())


def mean_average_precision(truth: np.ndarray, scores: np.ndarray) -> float:
    """Multi-label mAP: :func:`average_precision` of each class (columns of BxC `truth` and
    `scores`) over the images, averaged over the classes that occur."""
    aps = [average_precision(truth[:, c], scores[:, c]) for c in range(truth.shape[1]) if truth[:, c].any()]
    return float(np.mean(aps)) if aps else float("nan")


def tag_counts(truth: list, proposed: list) -> np.ndarray:
    """(images, true labels, proposed labels, right ones, images exactly right) of image-level label sets."""
    out = np.zeros(5, np.int64)
    for t, p in zip(truth, proposed):
        t, p = set(t), set(p)
        out += (1, len(t), len(p), len(t & p), t == p)
    return out


def tag_scores(counts: np.ndarray) -> dict:
    """Micro precision, recall and F1 of proposed labels, and the share of images exactly right, from
    :func:`tag_counts` (summed over batches); {} for no images."""
    images, true, proposed, right, exact = (int(v) for v in counts)
    if not images:
        return {}
    return {"tags_scored": images, "tag_precision": round(right / max(1, proposed), 4),
            "tag_recall": round(right / max(1, true), 4), "tag_f1": round(2 * right / max(1, true + proposed), 4),
            "tag_exact": round(exact / images, 4)}
