"""Dense CRF refinement (Krähenbühl & Koltun), numpy in, numpy out.

The unary is ``-log(p)`` of the given probabilities; a Gaussian kernel smooths and
a bilateral kernel snaps labels to colour edges. The kernel settings are
:class:`wsss_ray.config.CrfConfig`, whose defaults are the CLIP-ES reference's
(deeplab-pytorch's gauss 1/3, bilateral 67/3/4); ``iters = 0`` returns the
probabilities unchanged. Two backends, one model:

- ``torch`` (default): ``wsss_ray.lattice``, the permutohedral lattice in torch on
  any device, run on a grid ``downsample`` times coarser with edge-aware upsampling;
- ``pydensecrf``: ``pydensecrf2``, the maintained fork of pydensecrf that builds on
  Python 3.11 and numpy 2 (import name ``pydensecrf``), the reference.
"""

from __future__ import annotations

import numpy as np

from wsss_ray.config import CrfConfig


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


def _torch_crf(image: np.ndarray, probs: np.ndarray, config: CrfConfig, device: str) -> np.ndarray:
    import torch

    from wsss_ray.lattice import dense_crf_marginals

    with torch.no_grad():
        q = dense_crf_marginals(torch.from_numpy(np.array(image)).to(device),
                                torch.from_numpy(np.array(probs, np.float32)).to(device), config.iters,
                                config.gauss_sxy, config.gauss_compat, config.bilateral_sxy,
                                config.bilateral_srgb, config.bilateral_compat, config.downsample)
    return q.cpu().numpy()
