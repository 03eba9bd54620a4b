"""Test helper: stack (image, mask, confidence) rows into training tensors."""

from typing import Sequence

import numpy as np
import torch

from wsss_ray.train.transforms import SCALES, ArrayLike, _as_tensors, augment, normalize

Row = tuple[ArrayLike, ArrayLike, ArrayLike | None]


def to_batch(rows: Sequence[Row], crop: int | None = None, train: bool = False,
             rng: np.random.Generator | None = None, scales: Sequence[float] = SCALES
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image, mask, confidence) uint8 numpy triples -> (images, masks, confidence) tensors.

    Returns float32 Nx3xHxW normalised images, int64 NxHxW masks, float32 NxHxW
    confidence in [0, 1]. `train`: each row goes through :func:`augment` to `crop`
    (rng None = unseeded). Eval: no augmentation, rows must share one size (batch
    same-size images or one at a time).
    """
    if not rows:
        raise ValueError("to_batch needs at least one row")
    if train:
        if crop is None:
            raise ValueError("to_batch(train=True) needs a crop size")
        rng = rng if rng is not None else np.random.default_rng()
        triples = [augment(*row, crop=crop, rng=rng, scales=scales) for row in rows]
    else:
        triples = [tuple(t.as_subclass(torch.Tensor) for t in _as_tensors(*row)) for row in rows]
        sizes = sorted({tuple(m.shape) for _, m, _ in triples})
        if len(sizes) > 1:
            raise ValueError(f"eval rows differ in size {sizes}; batch same-size images or one at a time")
    images, masks, conf = (torch.stack(ts) for ts in zip(*triples))
    return normalize(images), masks.long(), conf.float() / 255
