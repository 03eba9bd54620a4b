"""Segmentation losses on pseudo-masks: plain cross-entropy and CLIP-ES's confidence-guided loss (CGL).

Pure torch. Both average cross-entropy over the pixels that count; a batch where no
pixel counts gives a zero that is still connected to the logits, so every DDP rank
runs the same backward.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

from wsss_ray.config import LOSSES
from wsss_ray.labelset import IGNORE_INDEX

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def _to_mask_size(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Upsample logits bilinearly (align_corners=False) to the mask size, if they differ."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def ce_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over pixels whose label is not 255.

    logits: float NxCxhxw; mask: integer NxHxW (0 background, 1..K classes, 255 ignore).
    Logits of another size are upsampled bilinearly to the mask (rather than the mask
    shrunk with nearest as in CLIP-ES), so every labelled pixel is scored. Returns a
    scalar; 0 (with grad_fn, zero gradient) when every pixel is ignored.
    """
    logits = _to_mask_size(logits, mask.shape[-2:])
    target = mask.long()
    total = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (target != IGNORE_INDEX).sum().clamp_min(1)


def cgl_loss(logits: torch.Tensor, mask: torch.Tensor, confidence: torch.Tensor,
             threshold: float = 0.95) -> torch.Tensor:
    """CLIP-ES confidence-guided loss: cross-entropy over pixels with confidence >= `threshold`.

    confidence: float NxHxW in [0, 1] (the uint8 confidence PNG / 255). Pixels below
    `threshold` or labelled 255 contribute nothing (no loss, zero gradient). Resizing
    and the all-ignored case are as in :func:`ce_loss`.
    """
    if confidence.shape != mask.shape:
        raise ValueError(f"confidence {tuple(confidence.shape)} and mask {tuple(mask.shape)} differ in shape")
    target = mask.long().masked_fill(confidence < threshold, IGNORE_INDEX)
    return ce_loss(logits, target)


def _ce_ignoring_confidence(logits: torch.Tensor, mask: torch.Tensor,
                            confidence: torch.Tensor | None = None) -> torch.Tensor:
    return ce_loss(logits, mask)


def make_loss(name: str, cgl_threshold: float = 0.95) -> LossFn:
    """The `--loss` callable ``(logits, mask, confidence) -> scalar``; "ce" ignores confidence."""
    if name not in LOSSES:
        raise ValueError(f"unknown --loss {name!r}; choose from {list(LOSSES)}")
    if name == "ce":
        return _ce_ignoring_confidence
    if not 0.0 <= cgl_threshold <= 1.0:
        raise ValueError(f"--cgl-threshold must lie in [0, 1], got {cgl_threshold}")
    return partial(cgl_loss, threshold=cgl_threshold)
