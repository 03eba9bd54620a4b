"""The CLIP-ES labeller: decoded images + image-level labels -> pseudo-masks + confidence.

One object owns the model and the encoded prompts (load once, call many times), as a
Ray actor needs; :func:`label_batch` is the one-call form. Nothing here imports Ray.

    labeler = Labeler.from_spec("toyclip", "toyworld")
    results = labeler.label([image], [["cow", "sheep"]])   # -> [LabelResult(mask, confidence, cams)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from wsss_ray.cam import caa
from wsss_ray.cam.gradcam import encode, minmax, patch_aligned_size, softmax_gradcam, to_model_input
from wsss_ray.cam.prompts import TextFeatures, text_features
from wsss_ray.clip import LoadedClip, load_clip
from wsss_ray.crf import CrfConfig, dense_crf
from wsss_ray.labelset import Labelset, load_labelset
from wsss_ray.masks import cams_to_probs, probs_to_mask


@dataclass(frozen=True)
class LabelConfig:
    """Every setting of the labeller; names are the CLI flags and MLflow params."""

    templates: tuple[str, ...] | None = None    # None: the labelset's
    synonym_fusion: str = "concat"              # concat (CLIP-ES) | mean | name
    background_words: bool = True
    softmax_over: str = "present"               # present (CLIP-ES) | all
    score: str = "softmax"                      # softmax (CLIP-ES) | logit (plain Grad-CAM)
    scales: tuple[float, ...] = (1.0,)
    caa: bool = True
    caa_layers: int | None = None               # None: the last 2/3 of the blocks (8 of 12 in CLIP-ES)
    caa_source: str = "attention"               # attention (CLIP-ES) | keys (key self-similarity)
    box_threshold: float = 0.4
    sinkhorn_iters: int = 3
    affinity_power: int = 2
    crf: bool = True
    crf_config: CrfConfig = field(default_factory=CrfConfig)
    bg_power: float = 1.0
    bg_threshold: float | None = None
    confidence_threshold: float | None = 0.95
    max_pairs: int = 64

    def with_(self, **changes) -> "LabelConfig":
        return replace(self, **changes)


@dataclass
class LabelResult:
    """Per image: uint8 mask (0 bg, i = class i, 255 unreliable), uint8 confidence 0..255,
    and the KxHxW CAMs of its labels (float32, [0,1]) for inspection."""

    mask: np.ndarray
    confidence: np.ndarray
    cams: np.ndarray


def class_ids(labelset: Labelset, labels: list[str]) -> list[int]:
    """0-based labelset indices of an image's labels, deduplicated, in the given order."""
    return list(dict.fromkeys(labelset.index(l) for l in labels))


def refine(image: np.ndarray, probs: np.ndarray, ids: list[int], config: LabelConfig
           ) -> tuple[np.ndarray, np.ndarray]:
    """(1+K)xHxW probabilities -> (mask, confidence): dense CRF when enabled, then argmax and ignore."""
    if config.crf:
        probs = dense_crf(image, probs, config.crf_config)
    return probs_to_mask(probs, ids, config.confidence_threshold)


class Labeler:
    """Holds a CLIP model, a labelset and its encoded prompts; labels batches of images."""

    def __init__(self, clip: LoadedClip, labelset: Labelset, config: LabelConfig = LabelConfig(),
                 text: TextFeatures | None = None):
        self.clip = clip
        self.labelset = labelset
        self.config = config
        self.text = text or text_features(clip.model, clip.tokenizer, labelset, config.templates,
                                          config.synonym_fusion, config.background_words)
        blocks = len(clip.model.visual.transformer.resblocks)
        self.caa_layers = config.caa_layers or max(1, math.ceil(blocks * 2 / 3))

    @classmethod
    def from_spec(cls, model: str = "toyclip", labelset: str | Labelset = "toyworld",
                  config: LabelConfig = LabelConfig(), pretrained: str | None = None,
                  device: str = "cpu") -> "Labeler":
        return cls(load_clip(model, pretrained, device), load_labelset(labelset), config)

    @property
    def device(self) -> torch.device:
        return next(self.clip.model.parameters()).device

    def class_ids(self, labels: list[str]) -> list[int]:
        """0-based labelset indices of an image's labels, deduplicated, in the given order."""
        return class_ids(self.labelset, labels)

    def cams(self, images: list[np.ndarray], labels: list[list[str]]) -> list[np.ndarray]:
        """Per image, KxHxW float32 CAMs in [0,1] at the image's own size (K = its labels)."""
        ids = [self.class_ids(l) for l in labels]
        acc = [np.zeros((len(i), *img.shape[:2]), np.float32) for img, i in zip(images, ids)]
        for scale in self.config.scales:
            for group in self._size_groups(images, scale):
                maps = self._grid_cams([images[b] for b in group], [ids[b] for b in group], scale)
                for b, m in zip(group, maps):
                    if not len(m):  # an image without labels: nothing to upsample
                        continue
                    h, w = images[b].shape[:2]
                    up = F.interpolate(m[None], size=(h, w), mode="bilinear", align_corners=False)[0]
                    acc[b] += up.clamp_(0, 1).cpu().numpy()
        return [minmax(torch.from_numpy(a)).numpy() if len(a) else a for a in acc]

    def probs(self, cams: list[np.ndarray]) -> list[np.ndarray]:
        """Per image, (1+K)xHxW probabilities (background first) from its CAMs."""
        return [cams_to_probs(c, self.config.bg_power, self.config.bg_threshold) for c in cams]

    def label(self, images: list[np.ndarray], labels: list[list[str]]) -> list[LabelResult]:
        """Pseudo-masks and confidence maps for a batch of uint8 HxWx3 RGB images."""
        cams = self.cams(images, labels)
        return [LabelResult(*refine(image, probs, self.class_ids(lab), self.config), cam)
                for image, lab, cam, probs in zip(images, labels, cams, self.probs(cams))]

    # -- internals

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


def label_batch(images: list[np.ndarray], labels: list[list[str]], labelset: str | Labelset = "toyworld",
                model: str | LoadedClip = "toyclip", config: LabelConfig = LabelConfig()
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Label one batch end to end; returns (masks, confidences). Builds a Labeler each call:
    hold a :class:`Labeler` instead when labelling many batches."""
    clip = model if isinstance(model, LoadedClip) else load_clip(model)
    results = Labeler(clip, load_labelset(labelset), config).label(images, labels)
    return [r.mask for r in results], [r.confidence for r in results]
