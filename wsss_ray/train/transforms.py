"""Joint augmentation of (image, mask, confidence) and batching for the segmentation net.

Random scale, pad-and-crop and horizontal flip as in deeplab-pytorch, done with
torchvision.transforms.v2 kernels on tv_tensors (image bilinear; mask and
confidence NEAREST_EXACT, nearest with pixel centres aligned as bilinear's are, so
labels do not drift half a pixel from the image). Randomness comes only from the
numpy Generator passed in, so a seed fixes the batch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from wsss_ray.labelset import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)
IMAGE_PAD = tuple(round(m * 255) for m in IMAGENET_MEAN)  # normalises to ~0

ArrayLike = np.ndarray | torch.Tensor


def _as_tensors(image: ArrayLike, mask: ArrayLike, confidence: ArrayLike | None
                ) -> tuple[tv_tensors.Image, tv_tensors.Mask, tv_tensors.Mask]:
    """uint8 HxWx3 / HxW arrays or tensors -> tv_tensors; a missing confidence means 255 everywhere."""
    image = torch.as_tensor(np.asarray(image))
    mask = torch.as_tensor(np.asarray(mask))
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != torch.uint8:
        raise ValueError(f"image must be uint8 HxWx3, got {image.dtype} {tuple(image.shape)}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {tuple(mask.shape)} does not match image {tuple(image.shape[:2])}")
    conf = torch.full_like(mask, 255) if confidence is None else torch.as_tensor(np.asarray(confidence))
    if conf.shape != mask.shape:
        raise ValueError(f"confidence {tuple(conf.shape)} does not match mask {tuple(mask.shape)}")
    return tv_tensors.Image(image.permute(2, 0, 1)), tv_tensors.Mask(mask), tv_tensors.Mask(conf)


def augment(image: ArrayLike, mask: ArrayLike, confidence: ArrayLike | None, crop: int, rng: np.random.Generator,
            scales: Sequence[float] = SCALES, flip: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random scale, pad to >= `crop`, random `crop` x `crop` window, random h-flip, applied alike to all three.

    image: uint8 HxWx3; mask, confidence: uint8 HxW (confidence None = all 255).
    Padding: image with the ImageNet mean, mask with 255, confidence with 0.
    Returns uint8 tensors 3xcropxcrop, cropxcrop, cropxcrop.
    """
    img, msk, conf = _as_tensors(image, mask, confidence)
    h, w = msk.shape
    s = float(rng.choice(np.asarray(scales, float)))
    size = [max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5))]
    if size != [h, w]:
        img = TF.resize(img, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        msk = TF.resize(msk, size, interpolation=InterpolationMode.NEAREST_EXACT)
        conf = TF.resize(conf, size, interpolation=InterpolationMode.NEAREST_EXACT)
    pad_h, pad_w = max(crop - size[0], 0), max(crop - size[1], 0)
    if pad_h or pad_w:
        pad = [0, 0, pad_w, pad_h]  # left, top, right, bottom
        img = TF.pad(img, pad, fill=list(IMAGE_PAD))
        msk = TF.pad(msk, pad, fill=IGNORE_INDEX)
        conf = TF.pad(conf, pad, fill=0)
    top = int(rng.integers(0, msk.shape[0] - crop + 1))
    left = int(rng.integers(0, msk.shape[1] - crop + 1))
    img, msk, conf = (TF.crop(t, top, left, crop, crop) for t in (img, msk, conf))
    if flip and rng.random() < 0.5:
        img, msk, conf = (TF.horizontal_flip(t) for t in (img, msk, conf))
    return img.as_subclass(torch.Tensor), msk.as_subclass(torch.Tensor), conf.as_subclass(torch.Tensor)


def normalize(image: torch.Tensor) -> torch.Tensor:
    """uint8 [N]x3xHxW -> float32, scaled to [0,1] then ImageNet mean/std normalised."""
    x = TF.to_dtype(image.as_subclass(torch.Tensor), torch.float32, scale=True)
    return TF.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))
