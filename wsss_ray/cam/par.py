"""Pixel-adaptive refinement (PAR): class scores diffused along an image's colour edges.

PAR (Ru et al., CVPR 2022, as ExCEL's training-free path uses it) compares every pixel
with 8 neighbours at each of several dilations (48 for 1, 2, 4, 8, 12, 24). A
neighbour's weight is a softmax over the neighbours of -(|I_p - I_q| / σ_p / w1)²,
averaged over the colour channels (σ_p: the standard deviation of the neighbours'
colours), plus w2 times a softmax of the same form over their distances; the scores are
then replaced by the weighted sum of their neighbours' `iters` times. Borders replicate.

Each neighbour is a shifted view of one padded tensor, so an iteration costs 48
multiply-adds per score, with no 3x3 convolution per neighbour. Pure torch, on the
scores' device, in float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from wsss_ray.budget import fit_side
from wsss_ray.cam.gradcam import full_precision

W_COLOUR = 0.3    # w1: the colour (and distance) kernel's width, in standard deviations
W_DISTANCE = 0.01  # w2: the weight of the distance term
OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def neighbours(x: torch.Tensor, dilations: tuple[int, ...]):
    """Yield each of the 8 x len(dilations) neighbour views of BxCxHxW `x` (border replicated)."""
    h, w = x.shape[-2:]
    for d in dilations:
        padded = F.pad(x, [d] * 4, mode="replicate")
        for dy, dx in OFFSETS:
            yield padded[..., d + dy * d:d + dy * d + h, d + dx * d:d + dx * d + w]


def par_weights(guide: torch.Tensor, dilations: tuple[int, ...]) -> torch.Tensor:
    """Bx3xHxW guide image -> Bx(8·D)xHxW neighbour weights (each pixel's sum to 1 + w2)."""
    centre = guide
    near = torch.stack(list(neighbours(guide, dilations)), dim=2)                      # B x 3 x 8D x H x W
    spread = near.std(dim=2, keepdim=True)
    colour = -((near - centre[:, :, None]).abs() / (spread + 1e-8) / W_COLOUR) ** 2
    colour = colour.mean(1).softmax(1)                                                # B x 8D x H x W
    dist = torch.tensor([math.hypot(dy, dx) * d for d in dilations for dy, dx in OFFSETS], device=guide.device)
    place = (-(dist / dist.std() / W_COLOUR) ** 2).softmax(0)
    return colour + W_DISTANCE * place.view(1, -1, 1, 1)


def par(guide: torch.Tensor, scores: torch.Tensor, iters: int = 20,
        dilations: tuple[int, ...] = (1, 2, 4, 8, 12, 24)) -> torch.Tensor:
    """Refine BxCxHxW `scores` along BxGxH'xW' `guide` (resized to HxW, corners aligned) `iters` times."""
    with full_precision(scores):
        guide = F.interpolate(guide.float(), size=scores.shape[-2:], mode="bilinear", align_corners=True)
        weights = par_weights(guide, dilations)
        x = scores.float()
        for _ in range(iters):
            out = torch.zeros_like(x)
            for k, view in enumerate(neighbours(x, dilations)):
                out.addcmul_(view, weights[:, k:k + 1])
            x = out
        return x


def par_cams(guide: torch.Tensor, cams: torch.Tensor, iters: int, dilations: tuple[int, ...],
             max_side: int | None) -> torch.Tensor:
    """ExCEL's last step on one image's KxHxW CAMs: PAR on [1 - max, CAMs] along the 3xH'xW'
    `guide`, within `max_side` (then brought back to HxW, bilinear).

    Returned as KxHxW maps in [0, 1] whose CLIP-ES background score ``1 - max`` (``post.bg_power``
    1) wins exactly where PAR's background does: s_k / (s_bg + max_j s_j).
    """
    h, w = cams.shape[-2:]
    with full_precision(cams):
        scores = torch.cat([1 - cams.float().amax(0, keepdim=True), cams.float()])[None]
        small = fit_side(h, w, max_side)
        if small != (h, w):
            scores = F.interpolate(scores, size=small, mode="bilinear", align_corners=False, antialias=True)
        scores = par(guide[None], scores, iters, dilations)
        if small != (h, w):
            scores = F.interpolate(scores, size=(h, w), mode="bilinear", align_corners=False)
        s = scores[0].clamp_min(0)
        return s[1:] / (s[0] + s[1:].amax(0)).clamp_min(1e-12)
