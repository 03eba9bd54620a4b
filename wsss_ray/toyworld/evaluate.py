"""Score a labeller against the toy world's exact masks (one confusion matrix per split)."""

from __future__ import annotations

import numpy as np

from wsss_ray.labeler import Labeler
from wsss_ray.metrics import SegScores, confusion_matrix, fill_ignored, scores
from wsss_ray.toyworld.world import Sample, split_samples

__all__ = ["evaluate", "split_samples"]


def evaluate(labeler: Labeler, samples: list[Sample], batch_size: int = 32) -> SegScores:
    """mIoU etc. of the labeller's masks (ignored pixels count as background)."""
    k = len(labeler.labelset) + 1
    hist = np.zeros((k, k), np.int64)
    for i in range(0, len(samples), batch_size):
        batch = samples[i:i + batch_size]
        results = labeler.label([s.image for s in batch], [list(s.labels) for s in batch])
        for s, r in zip(batch, results):
            hist += confusion_matrix(s.mask, fill_ignored(r.mask), k)
    return scores(hist)
