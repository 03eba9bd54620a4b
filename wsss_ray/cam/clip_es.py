"""CLIP-ES as a CAM method: softmax-GradCAM over the image's classes and background
words, at one or more scales, refined by class-aware attention affinity (CAA).

The steps live in ``gradcam.py`` (softmax-GradCAM, batched over (image, class)
pairs), ``prompts.py`` (templates, synonym fusion, background words) and
``caa.py``; this module wires them with the settings of :class:`ClipESConfig`.
"""

from __future__ import annotations

import math

import torch

from wsss_ray.cam import caa
from wsss_ray.cam.base import TextCamMethod
from wsss_ray.cam.gradcam import Encoded, GradCams, encode, explain, explain_loop
from wsss_ray.clip import LoadedClip
from wsss_ray.config import ClipESConfig
from wsss_ray.labelset import Labelset


class ClipES(TextCamMethod):
    """CLIP-ES CAMs (Lin et al., CVPR 2023) from a frozen CLIP; text features are encoded once."""

    config_class = ClipESConfig

    def __init__(self, config: ClipESConfig, clip: LoadedClip, labelset: Labelset):
        super().__init__(config, clip, labelset)
        blocks = len(clip.model.visual.transformer.resblocks)
        self.caa_layers = config.caa_layers or max(1, math.ceil(blocks * 2 / 3))

    def softmax_rows(self, class_ids: list[int]) -> tuple[torch.Tensor, list[int]]:
        """The text rows an image's softmax runs over and the row of each of its classes."""
        return self.text.for_image(class_ids, self.config.softmax_over)

    def gradcams(self, enc: Encoded, texts: list[torch.Tensor], targets: list[list[int]]) -> GradCams:
        """Per image, the softmax-GradCAMs of its targets at grid size, and (with CAA) the last
        block's attention, both from one last-block forward per image."""
        cfg = self.config
        return explain(self.clip.model, enc, texts, targets, cfg.score, cfg.max_pairs,
                       cfg.caa_source if cfg.caa else None)

    def _grid_cams(self, x: torch.Tensor, ids: list[list[int]]) -> list[torch.Tensor]:
        cfg = self.config
        enc = encode(self.clip.model, x, self.caa_layers if cfg.caa else 0, cfg.caa_source, last_block=False)
        rows = [self.softmax_rows(i) for i in ids]
        out = self.gradcams(enc, [r for r, _ in rows], [t for _, t in rows])
        if not cfg.caa:
            return out.cams
        return [caa.refine(c, caa.affinity([a[b] for a in enc.attention] + [out.attention[b]], cfg.sinkhorn_iters,
                                           cfg.affinity_power), cfg.box_threshold) if len(c) else c
                for b, c in enumerate(out.cams)]


class ClipESReferenceOrder(ClipES):
    """CLIP-ES in the reference code's order: the last block forward and backward once per
    class (:func:`~wsss_ray.cam.gradcam.explain_loop`). The same CAMs, slower; for tests and
    benchmarks, not registered as a method."""

    def gradcams(self, enc: Encoded, texts: list[torch.Tensor], targets: list[list[int]]) -> GradCams:
        cfg = self.config
        return explain_loop(self.clip.model, enc, texts, targets, cfg.score, cfg.caa_source if cfg.caa else None)
