"""CAM-like inputs for the dense CRF from photos with ground truth: the ground truth, degraded.

Each photo's one-hot ground truth of the classes present (+ background) is shrunk to a
1/32 grid (coarser than a ViT-B/16 CAM), bilinearly upsampled, Gaussian-blurred (sigma
8 px) and softened: what the CRF gets from a CAM, with a known answer to snap back to.
The CRF benchmarks (``benchmarks/crf_backends.py``, ``benchmarks/cpu_choices.py``) use it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsss_ray.labelset import IGNORE_INDEX
from wsss_ray.store import load_image, load_mask, read_manifest


def load_items(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, mask) of every item of the manifests ``root/*/manifest.jsonl``."""
    return [(load_image(item.image), load_mask(item.mask))
            for manifest in sorted(root.glob("*/manifest.jsonl")) for item in read_manifest(manifest)]


def blurred_probs(mask: np.ndarray, patch: int = 32, sigma: float = 8.0, soften: float = 0.3
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(classes present, CxHxW probs): GT one-hot shrunk to a coarse grid, upsampled, blurred."""
    from scipy.ndimage import gaussian_filter

    classes = np.array(sorted(set(np.unique(mask)) - {IGNORE_INDEX} | {0}))
    onehot = torch.from_numpy((mask[None] == classes[:, None, None]).astype(np.float32))
    h, w = mask.shape
    small = F.adaptive_avg_pool2d(onehot[None], (max(1, h // patch), max(1, w // patch)))
    up = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0].numpy()
    up = np.stack([gaussian_filter(u, sigma) for u in up])
    probs = (1 - soften) * up + soften / len(classes)
    return classes, (probs / probs.sum(0, keepdims=True)).astype(np.float32)
