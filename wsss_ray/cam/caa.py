"""Class-aware attention-based affinity (CLIP-ES CAA).

From the reference code (methods.md §1c): the head-averaged self-attention of the
last blocks (class token dropped) is averaged over those blocks; the NxN result is
Sinkhorn-normalised (columns then rows, 3 rounds) and symmetrised, T = (T + Tᵀ)/2;
raised to the power t = 2; then, for each class, only affinities *from* patches
inside the box region of that class's CAM are kept (column mask), and the CAM is
propagated once, cam' = T_k · vec(cam), then min-max normalised.

The box region is the union of the bounding boxes of the connected regions where
the CAM reaches ``box_threshold`` of its maximum (the reference's
``scoremap2bbox`` with every contour). Unlike the reference, a box that touches the
border keeps its last row/column.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from wsss_ray.cam.gradcam import full_precision, minmax


def affinity(attention: list[torch.Tensor] | torch.Tensor, sinkhorn_iters: int = 3, power: int = 2) -> torch.Tensor:
    """Symmetric, Sinkhorn-normalised patch affinity from attention maps.

    attention: list of (1+N)x(1+N) head-averaged maps of one image (class token first),
    or an already averaged NxN patch map. Returns NxN float32.
    """
    if isinstance(attention, (list, tuple)):
        attn = torch.stack([a[1:, 1:] for a in attention]).float().mean(0)
    else:
        attn = attention.float()
    with full_precision(attn):
        t = attn
        for _ in range(sinkhorn_iters):
            t = t / t.sum(0, keepdim=True)   # columns
            t = t / t.sum(1, keepdim=True)   # rows
        t = (t + t.T) / 2
        return torch.linalg.matrix_power(t, power) if power > 1 else t


def box_mask(cam: np.ndarray, box_threshold: float = 0.4) -> np.ndarray:
    """Union of bounding boxes of the 8-connected regions where cam >= box_threshold * max.

    cam: ghxgw float in [0,1]; returns ghxgw bool.
    """
    peak = float(cam.max())
    out = np.zeros(cam.shape, bool)
    if peak <= 0:
        return out
    # The reference binarises uint8(255*cam) at int(threshold*max) (strictly greater).
    cam8 = (cam * 255).astype(np.uint8)
    binary = cam8 > int(box_threshold * cam8.max())
    labelled, _ = ndimage.label(binary, structure=np.ones((3, 3), int))
    for sl in ndimage.find_objects(labelled):
        if sl is not None:
            out[sl] = True
    return out


def refine(cams: torch.Tensor, aff: torch.Tensor, box_threshold: float = 0.4) -> torch.Tensor:
    """Apply CAA to Kxghxgw CAMs with an NxN affinity; returns Kxghxgw in [0,1]."""
    k, gh, gw = cams.shape
    if k == 0:
        return cams
    cams = cams.float()
    boxes = torch.from_numpy(np.stack([box_mask(c, box_threshold) for c in cams.detach().cpu().numpy()])).to(cams.device)
    with full_precision(cams):
        masked = (cams.reshape(k, -1) * boxes.reshape(k, -1).to(cams.dtype))   # keep sources inside the box
        refined = masked @ aff.float().T                                       # cam'_i = sum_j T_ij cam_j
        return minmax(refined.reshape(k, gh, gw))
