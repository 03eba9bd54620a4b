"""How likely a pseudo-mask is right, without ground truth: ``quality`` and ``label_quality``.

Both are linear models over signals the CRF step has anyway: the probabilities
before the dense CRF (``probs``, background first) and its marginals after
(``marginals``), on the same grid. Each model is a weight per signal and a bias
(``QualityConfig``), fitted by least squares on the toy world's val split against each
image's mIoU with its exact mask (per label: that label's IoU), and clipped to [0, 1]:
so a score reads as an estimate of the mask's mIoU, and sorting by it puts the masks
most likely wrong first. ``benchmarks/quality_score.py`` fits the weights and measures
them on the test split (docs/RESULTS.md). Computed in torch on the arrays' device
(:func:`signal_tensors`), so a GPU actor scores a mask where it made it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np
import torch

from wsss_ray.config import IMAGE_SIGNALS, LABEL_SIGNALS

if TYPE_CHECKING:
    from wsss_ray.config import QualityConfig


MISSING_AREA = 0.001  # a label whose region covers less of the image than this is counted as missing


def signals(probs: np.ndarray, marginals: np.ndarray) -> tuple[dict[str, float], list[dict[str, float]]]:
    """(image signals, one dict of label signals per label) of (1+K)xHxW probabilities before
    and after the CRF (the same array twice when the CRF is off)."""
    image, per_label = signal_tensors(torch.as_tensor(np.asarray(probs, np.float32)),
                                      torch.as_tensor(np.asarray(marginals, np.float32)))
    return (dict(zip(IMAGE_SIGNALS, image.tolist())),
            [dict(zip(LABEL_SIGNALS, row)) for row in per_label.tolist()])


def signal_tensors(probs: torch.Tensor, marginals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`signals` as tensors on the inputs' device: IMAGE_SIGNALS, and K x LABEL_SIGNALS
    (values stacked in those tuples' order)."""
    if probs.shape != marginals.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and marginals {tuple(marginals.shape)} must lie on the "
                         f"same grid")
    marginals, probs = marginals.float(), probs.float()
    classes = len(marginals)
    ordered = marginals.topk(min(2, classes), dim=0).values
    top = ordered[0]
    margin = top - (ordered[1] if classes > 1 else 0.0)
    after, before = marginals.argmax(0), probs.argmax(0)
    entropy = -(marginals * torch.log(marginals + 1e-9)).sum(0) / np.log(max(classes, 2))
    labels = torch.arange(1, classes, device=marginals.device).view(-1, 1, 1)
    region, was = (after == labels).float(), (before == labels).float()        # K x H x W
    pixels = region.sum((1, 2))
    inside = pixels > 0
    area = region.mean((1, 2))

    def in_region(values: torch.Tensor) -> torch.Tensor:
        return torch.where(inside, (region * values).sum((1, 2)) / pixels.clamp_min(1), 0.0)

    union = torch.maximum(region, was).sum((1, 2))
    per_label = torch.stack([
        area, (area < MISSING_AREA).float(), in_region(top), in_region(margin), in_region(was),
        probs[1:].mean((1, 2)), (region * was).sum((1, 2)) / union.clamp_min(1),   # agreement: IoU before/after
    ], 1) if classes > 1 else marginals.new_zeros(0, len(LABEL_SIGNALS))
    empty = classes == 1

    def over_labels(column: int, reduce, default: float) -> torch.Tensor:
        return marginals.new_tensor(default) if empty else reduce(per_label[:, column])

    image = torch.stack([
        top.mean(), (top >= 0.95).float().mean(), margin.mean(), entropy.mean(), (before != after).float().mean(),
        (after == 0).float().mean(), marginals.new_tensor(float(classes - 1)),
        over_labels(1, torch.mean, 0.0), over_labels(5, torch.mean, 0.0), over_labels(6, torch.mean, 1.0),
        over_labels(2, torch.min, 1.0),
    ])
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
    return from_signals(*signals(probs, marginals), config)


def from_signals(image: Mapping[str, float], per_label: list[Mapping[str, float]],
                 config: QualityConfig) -> tuple[float, list[float]]:
    """(``quality``, ``label_quality``) of a mask's signals (:func:`signals`) under `config`."""
    return (linear(image, config.weights, config.bias),
            [linear(p, config.label_weights, config.label_bias) for p in per_label])
