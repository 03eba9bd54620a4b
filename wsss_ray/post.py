"""Post-processing on the CAMs' device: probabilities, dense CRF, quality, mask and confidence.

The steps ``wsss_ray.labeler`` runs after the CAMs, for an image within the CRF's size
budget, in torch on whatever device the CAMs are on: the background score
(:func:`wsss_ray.masks.cams_to_probs`), the torch CRF backend
(``wsss_ray.lattice``), the quality signals (``wsss_ray.quality``), the argmax and
the confidence. A GPU CAM actor runs them so that all an image sends back to the
host is its uint8 mask and confidence and a few quality numbers, a whole batch in two
copies (:func:`to_host`). Pure torch.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from wsss_ray.config import IMAGE_SIGNALS, LABEL_SIGNALS, CrfConfig, PostConfig
from wsss_ray.masks import cams_to_probs
from wsss_ray.quality import from_signals, signal_tensors


class OnDevice(NamedTuple):
    """One image's results, still on the device: uint8 mask and confidence (HxW), and its
    quality signals (the image's, then one row per label)."""

    mask: torch.Tensor
    confidence: torch.Tensor
    image_signals: torch.Tensor      # len(IMAGE_SIGNALS)
    label_signals: torch.Tensor      # K x len(LABEL_SIGNALS)


def marginals(image: torch.Tensor, probs: torch.Tensor, crf: CrfConfig) -> torch.Tensor:
    """The torch CRF backend's CxHxW marginals (`probs` itself with ``iters: 0``; certainty
    with one class), as :func:`wsss_ray.crf.dense_crf` gives them, on `probs`' device."""
    from wsss_ray.lattice import dense_crf_marginals

    if len(probs) < 2:
        return torch.ones_like(probs)
    if crf.iters == 0:
        return probs
    return dense_crf_marginals(image, probs, crf.iters, crf.gauss_sxy, crf.gauss_compat, crf.bilateral_sxy,
                               crf.bilateral_srgb, crf.bilateral_compat, crf.downsample, crf.final_step)


@torch.no_grad()
def label_image(image: torch.Tensor, cams: torch.Tensor, class_ids: list[int], post: PostConfig,
                crf: CrfConfig) -> OnDevice:
    """HxWx3 uint8 image and its KxHxW CAMs (same device) -> mask, confidence and signals there.

    `crf` is ``post.crf`` as it runs on this device (``wsss_ray.crf.on_device``): the torch backend.
    """
    probs = cams_to_probs(cams, post.bg_power, post.bg_threshold)
    q = marginals(image, probs, crf)
    top, arg = q.max(0)
    values = torch.tensor([0] + [c + 1 for c in class_ids], dtype=torch.uint8, device=q.device)
    confidence = torch.round(top * 255).to(torch.uint8)
    return OnDevice(values[arg], confidence, *signal_tensors(probs, q))


def to_host(results: list[OnDevice], post: PostConfig) -> list[tuple[np.ndarray, np.ndarray, float, list[float]]]:
    """Per image, (mask, confidence, quality, label_quality) on the host: the batch's masks and
    confidences go over in one copy, its signals in another."""
    if not results:
        return []
    pixels = torch.cat([t.reshape(-1) for r in results for t in (r.mask, r.confidence)]).cpu().numpy()
    numbers = torch.cat([t.reshape(-1) for r in results for t in (r.image_signals, r.label_signals)]).cpu()
    out, at, at_number = [], 0, 0
    for r in results:
        size = r.mask.numel()
        mask = pixels[at:at + size].reshape(r.mask.shape)
        confidence = pixels[at + size:at + 2 * size].reshape(r.mask.shape)
        at += 2 * size
        image = numbers[at_number:at_number + len(IMAGE_SIGNALS)].tolist()
        labels = numbers[at_number + len(IMAGE_SIGNALS):at_number + len(IMAGE_SIGNALS) + r.label_signals.numel()]
        at_number += len(IMAGE_SIGNALS) + r.label_signals.numel()
        per_label = [dict(zip(LABEL_SIGNALS, row)) for row in labels.view(-1, len(LABEL_SIGNALS)).tolist()]
        out.append((mask, confidence, *from_signals(dict(zip(IMAGE_SIGNALS, image)), per_label, post.quality)))
    return out
