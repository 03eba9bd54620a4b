"""From a segmenter's logits to its mask: the background offset (prior matching) and the CRF.

A network trained with cross-entropy on pseudo-masks hedges where they are noisy,
and noisy pixels are mostly object edges: its argmax calls less foreground than
its own training masks do (toy world, ``--arch clip``: 16 % of the pixels against
the masks' 22 %). The *background offset* b, subtracted from the background logit,
is fitted so that the predictions on training images have the foreground share of
their pseudo-masks (prior matching: only training masks, no ground truth). Then,
as for the pseudo-masks themselves, a dense CRF (``wsss_ray.crf``, the reference
kernel) snaps the probabilities to the image's colour edges. Pure torch/numpy.
"""

from __future__ import annotations

import numpy as np
import torch

from wsss_ray.config import REFINES, CrfConfig
from wsss_ray.crf import crf_within_budget, resize_probs
from wsss_ray.train.transforms import normalize

OFFSETS = np.round(np.arange(0.0, 4.0001, 0.125), 3)  # the background offsets prior matching chooses from


def foreground_counts(logits: torch.Tensor, known: np.ndarray | None = None,
                      offsets: np.ndarray = OFFSETS) -> np.ndarray:
    """CxHxW logits (class 0 background) -> for each offset b, the pixels (among the HxW `known`
    ones) whose argmax is not background once b is subtracted from the background logit."""
    margin = (logits[1:].amax(0) - logits[0]).float()
    if known is not None:
        margin = margin[torch.as_tensor(known, device=margin.device)]
    edges = torch.as_tensor(-offsets, dtype=margin.dtype)
    return np.array([(margin > e).sum().item() for e in edges], np.float64)


def fit_offset(predicted: np.ndarray, mask_foreground: float, pixels: float, offsets: np.ndarray = OFFSETS) -> float:
    """The smallest offset whose predicted foreground share reaches the masks' share.

    predicted: summed :func:`foreground_counts` over the calibration images; mask_foreground:
    their masks' foreground pixels (255 excluded from both counts' pixels). The largest
    offset when none reaches it, 0 without pixels.
    """
    if pixels <= 0:
        return 0.0
    reached = np.nonzero(predicted >= mask_foreground)[0]
    return float(offsets[reached[0]] if len(reached) else offsets[-1])


def probabilities(logits: torch.Tensor, image: np.ndarray, offset: float = 0.0, refine: str = "none") -> np.ndarray:
    """CxHxW logits of `image` (uint8 HxWx3) -> CxHxW float32 probabilities, background offset
    applied, then the CRF when `refine` is ``crf``."""
    if refine not in REFINES:
        raise ValueError(f"refine must be one of {REFINES}, got {refine!r}")
    logits = logits.float().clone()
    logits[0] -= offset
    probs = logits.softmax(0).cpu().numpy()
    if refine == "none":
        return probs
    marginals, _ = crf_within_budget(image, probs, CrfConfig())
    return marginals if marginals.shape == probs.shape else resize_probs(marginals, probs.shape[1:])


@torch.no_grad()
def logits_of(model: torch.nn.Module, image: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 HxWx3 image -> CxHxW logits of a segmentation model (ImageNet-normalised input)."""
    x = normalize(torch.as_tensor(image).permute(2, 0, 1)[None]).to(device)
    return model(x)[0]


def predict(model: torch.nn.Module, image: np.ndarray, device: str | torch.device = "cpu", offset: float = 0.0,
            refine: str = "none") -> np.ndarray:
    """uint8 HxWx3 image -> CxHxW float32 class probabilities as the model's checkpoint says to make them."""
    return probabilities(logits_of(model, image, device), image, offset, refine)


__all__ = ["OFFSETS", "fit_offset", "foreground_counts", "logits_of", "predict", "probabilities"]
