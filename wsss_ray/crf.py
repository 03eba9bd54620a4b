"""Dense CRF refinement (Krähenbühl & Koltun), numpy in, numpy out.

The unary is ``-log(p)`` of the given probabilities; a Gaussian kernel smooths and
a bilateral kernel snaps labels to colour edges. The kernel settings are
:class:`wsss_ray.config.CrfConfig`, whose defaults are the CLIP-ES reference's
(deeplab-pytorch's gauss 1/3, bilateral 67/3/4); ``iters = 0`` returns the
probabilities unchanged. Two backends, one model:

- ``torch``: ``wsss_ray.lattice``, the permutohedral lattice in torch on any
  device, run on a grid ``downsample`` times coarser with edge-aware upsampling;
- ``pydensecrf``: ``pydensecrf2``, the maintained fork of pydensecrf that builds on
  Python 3.11 and numpy 2 (import name ``pydensecrf``), the reference;
- ``auto`` (default), per device (:func:`on_device`): pydensecrf on a CPU, the
  torch lattice at full resolution on a GPU. Both keep the reference's >= 0.95
  pixels; the coarse grid, faster on a CPU, does not (docs/RESULTS.md).

Whatever the photo's size, :func:`refine` runs the CRF on it shrunk to ``max_side``
(``wsss_ray.budget``), and :func:`upsample_labels` brings the labels back to full
size along the full image's colour edges, so nothing but the final mask and
confidence grows with the photo's area.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image

from wsss_ray.budget import fit_side, shrink
from wsss_ray.config import CrfConfig, PostConfig, QualityConfig
from wsss_ray.masks import class_values, probs_to_mask
from wsss_ray.quality import mask_quality

BAND_PIXELS = 1 << 20  # edge pixels upsample_labels handles at once: bounds its memory


def dense_crf(image: np.ndarray, probs: np.ndarray, config: CrfConfig = CrfConfig(),
              device: str = "cpu") -> np.ndarray:
    """Refine per-pixel class probabilities with a dense CRF.

    Args:
        image: HxWx3 uint8 RGB.
        probs: CxHxW float probabilities (each pixel's C values sum to 1).
        config: kernel parameters, iterations and backend.
        device: where the ``torch`` backend runs (``cuda`` keeps it beside a GPU CAM actor).

    Returns: CxHxW float32 marginals (each pixel sums to 1).
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 uint8, got {image.dtype} {image.shape}")
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        raise ValueError(f"probs must be CxHxW matching the image {image.shape[:2]}, got {probs.shape}")
    c, h, w = probs.shape
    if c < 2:
        return np.ones_like(probs, dtype=np.float32)
    if config.iters == 0:
        return probs.astype(np.float32)
    config = on_device(config, device)
    if config.backend == "torch":
        return _torch_crf(image, probs, config, device)
    import pydensecrf.densecrf as dcrf

    unary = -np.log(np.clip(probs, 1e-5, 1.0)).reshape(c, -1).astype(np.float32)
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(np.ascontiguousarray(unary))
    d.addPairwiseGaussian(sxy=config.gauss_sxy, compat=config.gauss_compat)
    d.addPairwiseBilateral(sxy=config.bilateral_sxy, srgb=config.bilateral_srgb,
                           rgbim=np.require(image, requirements=["C", "W"]), compat=config.bilateral_compat)
    return np.asarray(d.inference(config.iters), dtype=np.float32).reshape(c, h, w)


def on_device(config: CrfConfig, device) -> CrfConfig:
    """The settings that run on `device`: ``auto`` becomes pydensecrf (the reference) on a CPU
    and the torch lattice at full resolution on any other device; other backends stay. Where
    pydensecrf cannot be imported, ``auto`` on a CPU is the torch lattice as configured."""
    if config.backend != "auto":
        return config
    if str(device or "cpu").split(":")[0] != "cpu":
        return dataclasses.replace(config, backend="torch", downsample=1)
    if not _has_pydensecrf():
        warnings.warn("pydensecrf cannot be imported here, so the CRF runs on the torch lattice: pip install "
                      "pydensecrf2 for the reference's confident pixels", stacklevel=2)
        return dataclasses.replace(config, backend="torch")
    return dataclasses.replace(config, backend="pydensecrf")


def _has_pydensecrf() -> bool:
    try:
        importlib.import_module("pydensecrf.densecrf")
    except ImportError:
        return False
    return True


def _torch_crf(image: np.ndarray, probs: np.ndarray, config: CrfConfig, device: str) -> np.ndarray:
    import torch

    from wsss_ray.post import marginals

    with torch.no_grad():
        q = marginals(torch.from_numpy(np.array(image)).to(device),
                      torch.from_numpy(np.array(probs, np.float32)).to(device), config)
    return q.cpu().numpy()


def refine(image: np.ndarray, probs: np.ndarray, class_ids: list[int], post: PostConfig,
           full_image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(1+K)xHxW probabilities over `image` -> (mask, confidence), uint8 at the full image's size.

    The dense CRF (unless ``crf.iters`` is 0) runs on the image shrunk to
    ``post.crf.max_side``, then the argmax (row k+1 is the class ``class_ids[k]``); when
    that is smaller than the full image (`full_image`, or `image` itself), the labels
    come back to full size along its colour edges (:func:`upsample_labels`).
    """
    marginals, small = crf_within_budget(image, probs, post.crf)
    return full_size_mask(marginals, small, class_ids, post, image if full_image is None else full_image)


class Refined(NamedTuple):
    """One image's pseudo-mask and confidence (uint8, the full image's size) and their scores."""

    mask: np.ndarray
    confidence: np.ndarray
    quality: float
    label_quality: list[float]


def refine_scored(image: np.ndarray, probs: np.ndarray, class_ids: list[int], post: PostConfig,
                  full_image: np.ndarray | None = None) -> Refined:
    """:func:`refine`, and the mask's ``quality`` and ``label_quality`` (``wsss_ray.quality``)
    from the probabilities before and after the CRF."""
    marginals, small = crf_within_budget(image, probs, post.crf)
    return Refined(*full_size_mask(marginals, small, class_ids, post, image if full_image is None else full_image),
                   *score(probs, marginals, post.quality))


def score(probs: np.ndarray, marginals: np.ndarray, config: QualityConfig) -> tuple[float, list[float]]:
    """(quality, label_quality) of the CRF's `marginals` from `probs`, brought to the marginals' grid."""
    if probs.shape != marginals.shape:
        probs = resize_probs(probs, marginals.shape[1:])
    return mask_quality(probs, marginals, config)


def full_size_mask(marginals: np.ndarray, small: np.ndarray, class_ids: list[int], post: PostConfig,
                   image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(1+K)xhxw marginals over `small` -> (mask, confidence) at `image`'s size (see :func:`refine`)."""
    if small.shape == image.shape:
        return probs_to_mask(marginals, class_ids)
    return upsample_labels(marginals, small, image, 2 * post.crf.bilateral_srgb, class_values(class_ids))


def crf_within_budget(image: np.ndarray, probs: np.ndarray, config: CrfConfig = CrfConfig(),
                      device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """The dense CRF at the budget's size: (CxH'xW' marginals, the H'xW'x3 image they are over).

    `image` (HxWx3 uint8) and `probs` (CxHxW) are shrunk so the long side is at most
    ``config.max_side``; within it, this is :func:`dense_crf` itself.
    """
    size = fit_side(*image.shape[:2], config.max_side)
    if probs.shape[1:] != size:
        probs = resize_probs(probs, size)
    small = shrink(image, size)
    return dense_crf(small, probs, config, device), small


def resize_probs(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """CxHxW probabilities -> Cx`size`, area-averaged when shrinking (bilinear when growing), renormalised."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.asarray(probs, np.float32))[None]
    if size[0] > probs.shape[1] or size[1] > probs.shape[2]:
        out = F.interpolate(x, size=size, mode="bilinear", align_corners=False)[0]
    else:
        out = F.interpolate(x, size=size, mode="area")[0]
    return (out / out.sum(0, keepdim=True).clamp_min(1e-12)).numpy()


def upsample_labels(marginals: np.ndarray, low_image: np.ndarray, image: np.ndarray, sigma_range: float,
                    values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CxhxW marginals over `low_image` (hxwx3) -> (labels, confidence 0..255), uint8 at `image`'s HxW.

    Each full-size pixel reads the 3x3 cells around the one it falls in. Where those
    agree on their argmax, so does any weighted mean of their marginals: the pixel takes
    that label, and its confidence is the bilinear interpolation of the cells' maxima.
    Along label edges (the cells disagree) it takes the argmax and maximum of the joint
    bilateral upsampling of the marginals (Kopf et al. 2007), as the torch backend's
    grid does: cells weighted by a Gaussian of their distance (one cell wide) and of
    their colour's difference from the pixel's (`sigma_range`), so the edge follows the
    full-size image, inside a cell too. Labels are ``values[argmax]`` (default: the
    argmax). Edge pixels go in groups of at most BAND_PIXELS, so beyond the two outputs
    memory grows with the image's width, not its area.
    """
    c, hl, wl = marginals.shape
    h, w = image.shape[:2]
    values = np.arange(c, dtype=np.uint8) if values is None else np.asarray(values, np.uint8)
    top = marginals.argmax(0)
    low_conf = np.take_along_axis(marginals, top[None], 0)[0]
    confidence = np.array(Image.fromarray(np.round(low_conf * 255).astype(np.uint8)).resize(
        (w, h), Image.Resampling.BILINEAR))
    rows, cols = _neighbours(h, hl), _neighbours(w, wl)
    labels = np.take(values[top][:, cols.cell], rows.cell, axis=0)         # where the cells agree: their label
    padded = np.pad(top, 1, mode="edge")
    edge = np.zeros((hl, wl), bool)                                         # the 3x3 cells around (y, x) disagree
    for dy in range(3):
        for dx in range(3):
            edge |= padded[dy:dy + hl, dx:dx + wl] != top
    first_row = np.searchsorted(rows.cell, np.arange(hl + 1))               # cell row y: full rows first_row[y:y+2]
    height = int(np.diff(first_row).max())                                  # the most full rows a cell row has
    cells = np.concatenate([low_image.reshape(-1, 3).T.astype(np.float32), marginals.reshape(c, -1)])
    pending: list[tuple[int, np.ndarray]] = []
    count = 0
    for y in np.nonzero(edge.any(1))[0]:
        xs = np.nonzero(edge[y][cols.cell])[0]                              # the full columns of its edge cells
        pending.append((y, xs))
        count += height * len(xs)
        if count >= BAND_PIXELS:
            _edge_pixels(pending, first_row, height, cells, image, rows, cols, wl, sigma_range, values, labels,
                         confidence)
            pending, count = [], 0
    if pending:
        _edge_pixels(pending, first_row, height, cells, image, rows, cols, wl, sigma_range, values, labels,
                     confidence)
    return labels, confidence


@dataclass(frozen=True)
class _Neighbours:
    """For each full-size position along one axis: the cell it falls in, and the three cells around
    it (offsets -1, 0, +1, clamped) with their Gaussian weights (0 outside the grid)."""

    cell: np.ndarray        # n
    near: np.ndarray        # 3 x n
    weight: np.ndarray      # 3 x n


def _neighbours(n: int, cells: int) -> _Neighbours:
    f = (np.arange(n, dtype=np.float32) + 0.5) * cells / n - 0.5          # position in cell units
    cell = np.clip(np.round(f), 0, cells - 1).astype(np.int64)
    near = cell[None] + np.arange(-1, 2)[:, None]
    weight = np.exp(-np.square(near - f) / 2) * ((near >= 0) & (near < cells))
    return _Neighbours(cell, np.clip(near, 0, cells - 1), weight.astype(np.float32))


def _edge_pixels(pending: list[tuple[int, np.ndarray]], first_row: np.ndarray, height: int, cells: np.ndarray,
                 image: np.ndarray, rows: _Neighbours, cols: _Neighbours, wl: int, sigma_range: float,
                 values: np.ndarray, labels: np.ndarray, confidence: np.ndarray) -> None:
    """Joint bilateral upsampling at the edge pixels of some cell rows, into `labels` and `confidence`.

    `pending` holds (cell row y, the full columns of its edge cells). Every full row of
    a cell row reads the same neighbouring cells, so the pixels are laid out as a
    `height` x S grid (S: all those columns; rows past a cell row's own are masked):
    the cells' colours and marginals are gathered once per column, and the rest is
    elementwise over the grid. `cells` holds one row per channel: r, g, b, then the C marginals.
    """
    ys = np.concatenate([np.full(len(xs), y) for y, xs in pending])        # S: each column's cell row
    xs = np.concatenate([xs for _, xs in pending])                          # S: its full column
    full = first_row[ys][None] + np.arange(height)[:, None]                 # height x S full rows
    inside = full < first_row[ys + 1][None]
    full = np.where(inside, full, first_row[ys][None])                      # masked rows read a real one
    colour = image.reshape(-1, 3)[full * image.shape[1] + xs[None]].astype(np.float32)   # height x S x 3
    c = cells.shape[0] - 3
    total = np.zeros((c, *full.shape), np.float32)
    norm = np.zeros(full.shape, np.float32)
    scale = np.float32(-0.5 / sigma_range ** 2)
    for dy in range(3):
        base = np.clip(ys + dy - 1, 0, len(first_row) - 2) * wl              # S
        wy = rows.weight[dy][full]                                          # height x S
        for dx in range(3):
            near = cells[:, base + cols.near[dx][xs]]                       # (3 + C) x S
            diff = np.square(colour[..., 0] - near[0])
            diff += np.square(colour[..., 1] - near[1])
            diff += np.square(colour[..., 2] - near[2])
            weight = np.maximum(np.exp(diff * scale, out=diff), 1e-8, out=diff)
            weight *= wy
            weight *= cols.weight[dx][xs]
            for k in range(c):
                total[k] += near[3 + k] * weight
            norm += weight
    top = total.argmax(0)
    best = np.take_along_axis(total, top[None], 0)[0] / np.maximum(norm, 1e-20)
    at = (full[inside], np.broadcast_to(xs, full.shape)[inside])
    labels[at] = values[top[inside]]
    confidence[at] = np.round(best[inside] * 255).astype(np.uint8)
