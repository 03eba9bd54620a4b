"""How likely a pseudo-mask is right, without ground truth: ``quality`` and ``label_quality``.

Both are linear models over signals the CRF step has anyway: the probabilities
before the dense CRF (``probs``, background first) and its marginals after
(``marginals``), on the same grid. Each model is a weight per signal and a bias
(``QualityConfig``), fitted by least squares on the toy world's val split against each
image's mIoU with its exact mask (per label: that label's IoU), and clipped to [0, 1]:
so a score reads as an estimate of the mask's mIoU, and sorting by it puts the masks
most likely wrong first. ``benchmarks/quality_score.py`` fits the weights and measures
them on the test split (docs/RESULTS.md). Pure numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np

if TYPE_CHECKING:
    from wsss_ray.config import QualityConfig


MISSING_AREA = 0.001  # a label whose region covers less of the image than this is counted as missing

def signals(probs: np.ndarray, marginals: np.ndarray) -> tuple[dict[str, float], list[dict[str, float]]]:
    """(image signals, one dict of label signals per label) of (1+K)xHxW probabilities before
    and after the CRF (the same array twice when the CRF is off)."""
    if probs.shape != marginals.shape:
        raise ValueError(f"probs {probs.shape} and marginals {marginals.shape} must lie on the same grid")
    marginals = np.asarray(marginals, np.float32)
    classes = len(marginals)
    ordered = np.sort(marginals, axis=0)
    top = ordered[-1]
    margin = top - (ordered[-2] if classes > 1 else 0.0)
    after, before = marginals.argmax(0), np.asarray(probs).argmax(0)
    entropy = -(marginals * np.log(marginals + 1e-9)).sum(0) / np.log(max(classes, 2))
    per_label = []
    for k in range(1, classes):
        region, was = after == k, before == k
        inside = region.any()
        per_label.append({
            "area": float(region.mean()),
            "missing": float(region.mean() < MISSING_AREA),
            "confidence_in_region": float(top[region].mean()) if inside else 0.0,
            "margin_in_region": float(margin[region].mean()) if inside else 0.0,
            "kept_by_crf": float(was[region].mean()) if inside else 0.0,
            "prob_mean": float(probs[k].mean()),
            "agreement": float((region & was).sum() / max((region | was).sum(), 1)),  # IoU before/after the CRF
        })

    def over_labels(key: str, reduce, empty: float) -> float:
        return float(reduce([p[key] for p in per_label])) if per_label else empty

    image = {
        "confidence_mean": float(top.mean()),
        "confidence_above_0.95": float((top >= 0.95).mean()),
        "margin_mean": float(margin.mean()),
        "entropy_mean": float(entropy.mean()),
        "crf_changed": float((before != after).mean()),
        "background": float((after == 0).mean()),
        "labels": float(classes - 1),
        "missing_labels": over_labels("missing", np.mean, 0.0),
        "label_prob_mean": over_labels("prob_mean", np.mean, 0.0),
        "label_agreement": over_labels("agreement", np.mean, 1.0),
        "label_confidence_min": over_labels("confidence_in_region", min, 1.0),
    }
    return image, per_label


def linear(values: Mapping[str, float], weights: Mapping[str, float], bias: float) -> float:
    """``bias + sum(weights[s] * values[s])`` clipped to [0, 1]; a weight for an unknown signal is an error."""
    unknown = sorted(set(weights) - set(values))
    if unknown:
        raise ValueError(f"quality weights name unknown signals {unknown}; known: {sorted(values)}")
    return float(np.clip(bias + sum(w * values[s] for s, w in weights.items()), 0.0, 1.0))


def mask_quality(probs: np.ndarray, marginals: np.ndarray, config: QualityConfig) -> tuple[float, list[float]]:
    """(``quality``, ``label_quality`` per label in order) of one mask under `config`
    (``weights``/``bias`` per image, ``label_weights``/``label_bias`` per label)."""
    image, per_label = signals(probs, marginals)
    return (linear(image, config.weights, config.bias),
            [linear(p, config.label_weights, config.label_bias) for p in per_label])
