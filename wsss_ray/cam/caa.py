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
border keeps its last row/column. The regions are found in torch on the CAMs' own
device (:func:`box_masks`), so a GPU actor does not stop to copy maps to the host.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wsss_ray.cam.gradcam import full_precision, minmax

BORDERS = ("keep", "reference")


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


def box_masks(cams: torch.Tensor, box_threshold: float = 0.4, border: str = "keep") -> torch.Tensor:
    """Per map, the union of the bounding boxes of the 8-connected regions where the map
    reaches `box_threshold` of its maximum; Kxghxgw float in [0, 1] -> Kxghxgw bool, on the
    maps' device.

    As the reference, the map is binarised as uint8(255 * cam) > int(threshold * its max).
    Regions are labelled by propagating each pixel's index to its 3x3 neighbours inside the
    region until nothing changes (the region's largest index wins); each region's box is its
    rows' and columns' extent (scatter min/max), and the union of boxes is one
    (rows x regions) @ (regions x columns) product per map. ``border="reference"`` clips a box
    that reaches the last row or column to the one before, as the reference code's
    ``x1 = min(x + w, W - 1)`` does; ``"keep"`` keeps it.
    """
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
    k, gh, gw = cams.shape
    cam8 = (cams.float() * 255).to(torch.uint8)                 # truncates, as numpy's astype(uint8)
    peak = cam8.flatten(1).amax(1).double()
    binary = cam8 > (box_threshold * peak).floor().view(k, 1, 1)
    index = torch.arange(1, gh * gw + 1, device=cams.device, dtype=torch.float32).view(1, gh, gw)
    labels = torch.where(binary, index, torch.zeros((), device=cams.device))
    while True:
        before = labels
        for _ in range(4):  # a few steps between checks: each check waits for the device
            labels = torch.where(binary, F.max_pool2d(labels[:, None], 3, 1, 1)[:, 0], labels)
        if torch.equal(labels, before):
            break
    dev, n = cams.device, gh * gw + 1                           # region ids: 1..gh*gw (0: outside every region)
    ids = (labels.long() + n * torch.arange(k, device=dev).view(k, 1, 1)).flatten()
    y = torch.arange(gh, device=dev).view(1, gh, 1).expand(k, gh, gw).flatten()
    x = torch.arange(gw, device=dev).view(1, 1, gw).expand(k, gh, gw).flatten()

    def extent(coord: torch.Tensor, size: int, reduce: str) -> torch.Tensor:
        start = torch.full((k * n,), size if reduce == "amin" else -1, device=dev, dtype=torch.long)
        return start.scatter_reduce(0, ids, coord, reduce).view(k, 1, n)[..., 1:]   # K x 1 x regions

    clip = 1 if border == "reference" else 0
    y_in = torch.arange(gh, device=dev).view(1, gh, 1)
    x_in = torch.arange(gw, device=dev).view(1, gw, 1)
    y_end = extent(y, gh, "amax").clamp_max(gh - 1 - clip)
    x_end = extent(x, gw, "amax").clamp_max(gw - 1 - clip)
    in_rows = ((y_in >= extent(y, gh, "amin")) & (y_in <= y_end)).float()   # K x gh x regions
    in_cols = ((x_in >= extent(x, gw, "amin")) & (x_in <= x_end)).float()   # K x gw x regions
    return torch.bmm(in_rows, in_cols.transpose(1, 2)) > 0


def refine(cams: torch.Tensor, aff: torch.Tensor, box_threshold: float = 0.4, border: str = "keep") -> torch.Tensor:
    """Apply CAA to Kxghxgw CAMs with an NxN affinity; returns Kxghxgw in [0,1]. `border`: see
    :func:`box_masks`."""
    k, gh, gw = cams.shape
    if k == 0:
        return cams
    cams = cams.float()
    boxes = box_masks(cams.detach(), box_threshold, border)
    with full_precision(cams):
        masked = (cams.reshape(k, -1) * boxes.reshape(k, -1).to(cams.dtype))   # keep sources inside the box
        refined = masked @ aff.float().T                                       # cam'_i = sum_j T_ij cam_j
        return minmax(refined.reshape(k, gh, gw))
