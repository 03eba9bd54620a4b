"""CLIP-ES as a CAM method: softmax-GradCAM over the image's classes and background
words, at one or more scales, refined by class-aware attention affinity (CAA).

The steps live in ``gradcam.py`` (softmax-GradCAM, batched over (image, class)
pairs), ``prompts.py`` (templates, synonym fusion, background words) and
``caa.py``; this module wires them with the settings of :class:`ClipESConfig`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from wsss_ray.cam import caa
from wsss_ray.cam.base import CamMethod
from wsss_ray.cam.gradcam import encode, minmax, patch_aligned_size, softmax_gradcam, to_model_input
from wsss_ray.cam.prompts import class_texts, text_features
from wsss_ray.clip import LoadedClip
from wsss_ray.config import ClipESConfig
from wsss_ray.labelset import Labelset


class ClipES(CamMethod):
    """CLIP-ES CAMs (Lin et al., CVPR 2023) from a frozen CLIP; text features are encoded once."""

    config_class = ClipESConfig

    def __init__(self, config: ClipESConfig, clip: LoadedClip, labelset: Labelset):
        super().__init__(config, clip, labelset)
        self.text = text_features(clip.model, clip.tokenizer, labelset, config.templates,
                                  config.synonym_fusion, config.background_words)
        blocks = len(clip.model.visual.transformer.resblocks)
        self.caa_layers = config.caa_layers or max(1, math.ceil(blocks * 2 / 3))

    @property
    def device(self) -> torch.device:
        return next(self.clip.model.parameters()).device

    def cams(self, images: list[np.ndarray], class_ids: list[list[int]]) -> list[np.ndarray]:
        """Per image, KxHxW float32 CAMs in [0,1]: the sum over scales, min-max normalised."""
        acc = [np.zeros((len(i), *img.shape[:2]), np.float32) for img, i in zip(images, class_ids)]
        for scale in self.config.scales:
            for group in self._size_groups(images, scale):
                maps = self._grid_cams([images[b] for b in group], [class_ids[b] for b in group], scale)
                for b, m in zip(group, maps):
                    if not len(m):  # an image without labels: nothing to upsample
                        continue
                    up = F.interpolate(m[None].float(), size=images[b].shape[:2], mode="bilinear",
                                       align_corners=False)[0]
                    acc[b] += up.clamp_(0, 1).cpu().numpy()
        return [minmax(torch.from_numpy(a)).numpy() if len(a) else a for a in acc]

    @classmethod
    def prompts(cls, config: ClipESConfig, labelset: Labelset) -> list[str]:
        templates = config.templates or labelset.templates
        words = [text for group in class_texts(labelset, config.synonym_fusion) for text in group]
        words += list(labelset.background) if config.background_words else []
        return [t.format(w) for w in words for t in templates]

    def _size_groups(self, images: list[np.ndarray], scale: float) -> list[list[int]]:
        p = self.clip.patch_size
        groups: dict[tuple[int, int], list[int]] = {}
        for b, img in enumerate(images):
            groups.setdefault(patch_aligned_size(*img.shape[:2], p, scale), []).append(b)
        return list(groups.values())

    def _grid_cams(self, images: list[np.ndarray], ids: list[list[int]], scale: float) -> list[torch.Tensor]:
        cfg = self.config
        size = patch_aligned_size(*images[0].shape[:2], self.clip.patch_size, scale)
        x = torch.stack([to_model_input(im, size, self.clip.mean, self.clip.std) for im in images]).to(self.device)
        enc = encode(self.clip.model, x, self.caa_layers if cfg.caa else 0, cfg.caa_source)
        rows = [self.text.for_image(i, cfg.softmax_over) for i in ids]
        cams = softmax_gradcam(self.clip.model, enc, [r for r, _ in rows], [t for _, t in rows],
                               cfg.score, cfg.max_pairs)
        if cfg.caa:
            cams = [caa.refine(c, caa.affinity([a[b] for a in enc.attention], cfg.sinkhorn_iters,
                                               cfg.affinity_power), cfg.box_threshold)
                    for b, c in enumerate(cams)]
        return cams
