"""The size budget: how large an image the CAM model and the dense CRF see, whatever the photo.

A photo is labelled at its full size (its mask and confidence have its pixels), but
the work in between is bounded: the CAM method sees the image shrunk until its long
side is at most the method's ``max_side`` (then times each of its ``scales``), and
the dense CRF runs on the image shrunk to ``post.crf.max_side``; the CRF's labels
come back to full size along the image's colour edges (:func:`wsss_ray.crf.refine`).
This is SAM's ``ResizeLongestSide`` convention. The defaults (640) leave every
VOC (at most 500 px) and COCO (at most 640 px) image exactly as it is; a model's
``label_config.yaml`` sets its own (toyclip, trained at 64 px: 64).

Pure numpy and Pillow: the job's decode tasks use it too.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def fit_side(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """(height, width) shrunk, aspect kept, so the long side is at most `max_side` (None: no limit).

    Sizes within the budget come back unchanged; the short side is at least 1.
    """
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 HxWx3 -> uint8 at `size` (height, width), antialiased (Pillow's bicubic);
    the same array when it already has that size. Memory: the output, and one pass's rows."""
    if image.shape[:2] == tuple(size):
        return image
    out = Image.fromarray(np.require(image, np.uint8, "C")).resize((size[1], size[0]), Image.Resampling.BICUBIC,
                                                                    reducing_gap=3.0)
    return np.asarray(out)


def budget_side(*sides: int | None) -> int | None:
    """The largest of the budgets `sides` (None when any is unbounded): what a decode may shrink to
    without changing what any later step sees."""
    return None if any(s is None for s in sides) else max(sides)


def decode_side(method_config, crf_config) -> int | None:
    """The long side a job may decode an image at: the larger of the method's budget (its settings'
    ``max_side``; a method without one needs the whole image) and the CRF's."""
    return budget_side(getattr(method_config, "max_side", None), crf_config.max_side)
