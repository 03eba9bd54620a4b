"""Masks: PNG encode/decode, the colour palette and overlays.

A mask is a uint8 HxW array: 0 background, i (1-based) the i-th labelset class,
255 ignore. It is stored as a single-channel 8-bit PNG with the VOC palette
attached (so viewers show colours while readers get the indices back).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from wsss_ray.labelset import IGNORE_INDEX

if TYPE_CHECKING:
    import torch


def voc_palette() -> np.ndarray:
    """The PASCAL VOC colour map, 256x3 uint8 (index 255 is the light ignore colour)."""
    pal = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


PALETTE = voc_palette()


def encode_png(mask: np.ndarray, palette: bool = True) -> bytes:
    """uint8 HxW -> PNG bytes (palette mode when `palette`, else greyscale)."""
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"a mask must be a uint8 HxW array, got {mask.dtype} {mask.shape}")
    img = Image.fromarray(mask, mode="L")
    if palette:
        img = img.convert("P")  # L -> P keeps the indices; attach the colours
        img.putpalette(PALETTE.tobytes())
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes of a single-channel mask -> uint8 HxW (palette indices, not colours)."""
    img = Image.open(io.BytesIO(data))
    if img.mode not in ("P", "L"):
        raise ValueError(f"a mask PNG must be single-channel (mode P or L), got mode {img.mode}")
    return np.array(img, dtype=np.uint8)


def colorize(mask: np.ndarray) -> np.ndarray:
    """uint8 HxW mask -> uint8 HxWx3 RGB in the palette colours."""
    return PALETTE[mask]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the coloured mask over an RGB image; background and ignore stay unblended."""
    out = image.astype(np.float32)
    fg = (mask != 0) & (mask != IGNORE_INDEX)
    out[fg] = (1 - alpha) * out[fg] + alpha * PALETTE[mask[fg]]
    return out.astype(np.uint8)


def overlay_grid(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """(image, mask) pairs -> one uint8 image: each image above its overlay, one column
    per pair, shorter columns padded with black at the bottom."""
    tiles = [np.concatenate([image, overlay(image, mask)], axis=0) for image, mask in pairs]
    h = max(t.shape[0] for t in tiles)
    return np.concatenate([np.pad(t, ((0, h - t.shape[0]), (0, 0), (0, 0))) for t in tiles], axis=1)


# ---------------------------------------------------------------- CAMs -> pseudo-masks


def cams_to_probs(cams: np.ndarray | torch.Tensor, bg_power: float = 1.0,
                  bg_threshold: float | None = None) -> np.ndarray | torch.Tensor:
    """KxHxW CAMs in [0,1] -> (1+K)xHxW per-pixel probabilities (background first); a numpy
    array gives a numpy array, a tensor a tensor on its device.

    Background score is ``(1 - max_k cam_k) ** bg_power`` (CLIP-ES) or, when
    `bg_threshold` is given, that constant (the IRN/WeakTr convention). Scores are
    normalised to sum to 1 per pixel (a per-pixel constant, so a CRF's result is
    unchanged by it).
    """
    import torch  # here: the export and the review read masks without torch

    if isinstance(cams, np.ndarray):
        return cams_to_probs(torch.from_numpy(cams.astype(np.float32)), bg_power, bg_threshold).numpy()
    cams = cams.float().clamp(0, 1)
    if cams.shape[0] == 0:
        return cams.new_ones((1, *cams.shape[1:]))
    if bg_threshold is not None:
        bg = cams.new_full(cams.shape[1:], bg_threshold)
    else:
        bg = torch.pow(1 - cams.amax(0), bg_power)
    scores = torch.cat([bg[None], cams]) + 1e-6
    return scores / scores.sum(0, keepdim=True)


def probs_to_mask(probs: np.ndarray, class_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(1+K)xHxW probabilities -> (mask, confidence), both uint8 HxW.

    Row k+1 of `probs` is the class with 0-based labelset index ``class_ids[k]``,
    so mask values are ``class_ids[k] + 1`` (0 = background). The mask is the full
    argmax; the confidence is the max probability scaled to 0..255. Thresholds on
    the confidence are applied where it is used (:func:`ignore_below`, CGL training).
    """
    return class_values(class_ids)[probs.argmax(0)], np.round(probs.max(0) * 255).astype(np.uint8)


def class_values(class_ids: list[int]) -> np.ndarray:
    """The mask value of each row of (1+K) probabilities: 0 (background), then ``class_ids[k] + 1``."""
    return np.array([0] + [c + 1 for c in class_ids], np.uint8)


def ignore_below(mask: np.ndarray, confidence: np.ndarray, min_confidence: float) -> np.ndarray:
    """The mask with ignore (255) where the uint8 confidence / 255 is below `min_confidence`.

    The same rule as the confidence-guided loss, for consumers that want the
    reliable pixels only (``export --min-confidence``).
    """
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must lie in [0, 1], got {min_confidence}")
    return np.where(confidence.astype(np.float32) / 255 < min_confidence, IGNORE_INDEX, mask).astype(np.uint8)
