"""Score a labeller against the toy world's exact masks (one confusion matrix per split)."""

from __future__ import annotations

from wsss_ray.labeler import Labeler
from wsss_ray.metrics import SegScores, accumulate, scores
from wsss_ray.toyworld.world import Sample, split_samples

__all__ = ["evaluate", "split_samples"]


def evaluate(labeler: Labeler, samples: list[Sample], batch_size: int = 32) -> SegScores:
    """mIoU etc. of the labeller's masks on `samples`, in batches of `batch_size`."""
    def pairs():
        for i in range(0, len(samples), batch_size):
            batch = samples[i:i + batch_size]
            results = labeler.label([s.image for s in batch], [list(s.labels) for s in batch])
            yield from ((s.mask, r.mask) for s, r in zip(batch, results))

    return scores(accumulate(pairs(), len(labeler.labelset) + 1))
