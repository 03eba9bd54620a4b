"""``precision: auto`` off a CPU: the fastest autocast whose masks stay those of float32.

On a CPU with native bf16, ``auto`` is bf16 (``wsss_ray.labeler.autocast_dtype``): there
its CAMs and thresholded masks agree with float32's as closely as TOLERANCE states
(docs/RESULTS.md). On a GPU, half precision can be several times faster but has given
different CAMs (an earlier fp16 run agreed with fp32 on 86.7 % of argmax pixels), so
the labeller measures instead of assuming: it labels a few deterministic toy-world
probe images in float32 and in each candidate, and keeps the fastest candidate whose
CAMs (Pearson r, median over images) and thresholded masks (argmax with 255 below
0.95, pixels equal, median) agree with float32's at least as TOLERANCE says, else
float32. Pure torch/numpy.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

CANDIDATES = ("bf16", "fp16")
PROBE_IMAGES = 8
PROBE_SIDE = 384          # VOC-like: the speed at this size is the job's
CONFIDENT = 0.95          # the threshold CLIP-ES trains with


@dataclass(frozen=True)
class Agreement:
    """How closely a precision's results follow float32's on the probe images (medians)."""

    cam_r: float          # Pearson r of the CAMs
    masks: float          # share of pixels of the thresholded masks that are equal


# The CPU's bf16 against float32, CLIP-ES's ViT-B/16 defaults, on the probe, three random weight
# draws: r 0.99988 to 0.99998, masks 99.73 % to 99.997 % (`benchmarks/gpu_throughput.py --parts
# precision_probe` on a CPU; docs/RESULTS.md). A candidate must do as well, with a margin for the
# weights: r 0.9995, masks 99.5 % (an fp16 run that agreed on 86.7 % of argmax pixels fails).
TOLERANCE = Agreement(cam_r=0.9995, masks=0.995)


@dataclass(frozen=True)
class Trial:
    """One precision on the probe: seconds per image (labelling, after one warm-up) and agreement."""

    precision: str
    seconds: float
    agreement: Agreement


def probe(labelset_size: int, side: int = PROBE_SIDE, images: int = PROBE_IMAGES
          ) -> tuple[list[np.ndarray], list[list[int]]]:
    """Deterministic toy-world images and two class ids each (any labelset: only the numbers matter)."""
    from wsss_ray.toyworld import render

    pictures = [render(4_000_000 + i, side).image for i in range(images)]
    ids = [sorted({i % labelset_size, (i + 1) % labelset_size}) for i in range(images)]
    return pictures, ids


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(labeler, candidates: tuple[str, ...] = CANDIDATES, side: int = PROBE_SIDE,
            images: int = PROBE_IMAGES) -> list[Trial]:
    """float32 and each candidate on the probe, with `labeler` (a ``wsss_ray.labeler.Labeler``);
    its own precision is left as it was."""
    from wsss_ray.masks import ignore_below

    pictures, ids = probe(len(labeler.labelset), side, images)
    labels = [[labeler.labelset.names[i] for i in row] for row in ids]
    before, out, reference = labeler.precision, [], None
    try:
        for precision in ("fp32", *candidates):
            labeler.precision = precision
            try:
                labeler.label(pictures[:1], labels[:1])  # warm-up: kernels, autotuning
                _sync(labeler.method.device)
                start = time.perf_counter()
                results = labeler.label(pictures, labels)
                _sync(labeler.method.device)
            except RuntimeError as e:  # e.g. a dtype this device's kernels lack: not a candidate here
                if precision == "fp32":
                    raise
                log.warning("precision %s cannot run on %s, so it is not a candidate: %s", precision,
                            labeler.method.device, e)
                continue
            seconds = (time.perf_counter() - start) / len(pictures)
            masks = [ignore_below(r.mask, r.confidence, CONFIDENT) for r in results]
            if reference is None:
                reference = (results, masks)
            cam_r = [float(np.corrcoef(r.cams.ravel(), ref.cams.ravel())[0, 1]) if r.cams.size else 1.0
                     for r, ref in zip(results, reference[0])]
            same = [float((m == ref).mean()) for m, ref in zip(masks, reference[1])]
            out.append(Trial(precision, seconds, Agreement(float(np.median(cam_r)), float(np.median(same)))))
    finally:
        labeler.precision = before
    return out


def choose(trials: list[Trial], tolerance: Agreement = TOLERANCE) -> str:
    """The fastest of the trials whose agreement with float32 meets `tolerance` (float32 meets it)."""
    fair = [t for t in trials if t.precision == "fp32" or
            (t.agreement.cam_r >= tolerance.cam_r and t.agreement.masks >= tolerance.masks)]
    return min(fair, key=lambda t: t.seconds).precision
