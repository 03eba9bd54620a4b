"""ExCEL's training-free labeller as a CAM method: one forward pass, no gradients.

ExCEL (Yang et al., CVPR 2025, arXiv 2503.20826) explores CLIP's text and visual
knowledge for better maps from the same ViT-B/16 as CLIP-ES; its training-free path is
what this implements, from the paper and the facts of the authors' public code (their
code is not copied):

1. static visual calibration: a dense path beside the last blocks
   (:func:`wsss_ray.vit.calibrated_tokens`), its patch features normalised over the
   token axis;
2. patch-text scores with CLIP Surgery's redundancy removal over every labelset class
   and background word (:func:`surgery_maps`), min-max over the tokens (class token
   included);
3. optionally, text semantic enrichment: class texts plus their attribute centres
   (``wsss_ray.cam.attributes``);
4. the class-aware affinity of the original path's attention, boxes at 0.79
   (``wsss_ray.cam.caa``), giving the grid-level maps;
5. at the image's size, the background 1 - max and pixel-adaptive refinement
   (``wsss_ray.cam.par``).

The grid maps before and after the affinity are reachable (:meth:`Excel.grid_maps`) for
parity checks. Settings: :class:`~wsss_ray.config.ExcelConfig`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from wsss_ray.cam import caa
from wsss_ray.cam.base import TextCamMethod
from wsss_ray.cam.gradcam import full_precision, minmax, patch_aligned_size, to_model_input
from wsss_ray.cam.par import par_cams
from wsss_ray.clip import LoadedClip
from wsss_ray.config import ExcelConfig
from wsss_ray.labelset import Labelset
from wsss_ray.vit import calibrated_tokens, patch_size

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SURGERY_TEMPERATURE = 2.0   # CLIP Surgery's weights: softmax(2 · class token · text)


def surgery_maps(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Patch-text scores after CLIP Surgery's redundancy removal, min-max over the tokens.

    features: Bx(1+N)xE token features (class token first); text: TxE rows, every class and
    background word. Each text's weight is softmax(2 · class token · text) over the texts,
    divided by its mean; the score of token n and text t is the sum over channels of
    w_t f_n ⊙ t minus its mean over all texts, which is w_t (f_n · t) - mean_t' w_t' (f_n · t'),
    so no BxNxTxE product is formed. Each text's scores are min-max normalised over all
    1+N tokens, the class token included. Returns Bx(1+N)xT.
    """
    with full_precision(features):
        f, t = features.float(), text.float()
        sim = f @ t.T                                                     # B x (1+N) x T
        w = (SURGERY_TEMPERATURE * sim[:, :1]).softmax(-1)
        w = w / w.mean(-1, keepdim=True)                                   # B x 1 x T
        scores = w * sim
        scores = scores - scores.mean(-1, keepdim=True)
        lo, hi = scores.amin(1, keepdim=True), scores.amax(1, keepdim=True)
        return (scores - lo) / (hi - lo).clamp_min(1e-12)


class GridMaps(NamedTuple):
    """Per image of a batch, its classes' maps at grid size, before and after the affinity."""

    raw: list[torch.Tensor]        # Kxghxgw in [0, 1]: the calibrated patch-text scores
    refined: list[torch.Tensor]    # Kxghxgw in [0, 1]: after the class-aware affinity


class Excel(TextCamMethod):
    """ExCEL training-free CAMs (Yang et al., CVPR 2025) from a frozen CLIP ViT."""

    config_class = ExcelConfig

    def __init__(self, config: ExcelConfig, clip: LoadedClip, labelset: Labelset):
        super().__init__(config, clip, labelset)
        blocks = len(clip.model.visual.transformer.resblocks)
        self.dense_layers = config.dense_layers or max(1, round(blocks * 5 / 12))
        self.affinity_layers = config.affinity_layers or min(blocks, self.dense_layers + 1)
        if self.dense_layers > blocks or self.affinity_layers > blocks:
            raise ValueError(f"excel.dense_layers ({self.dense_layers}) and excel.affinity_layers "
                             f"({self.affinity_layers}) must be at most this model's {blocks} blocks")
        self.classes = self.text.classes
        if config.descriptors:
            from wsss_ray.cam.attributes import enrich, read_descriptors

            self.classes = enrich(self.text.classes, clip, read_descriptors(config.descriptors, labelset),
                                  config.clusters, config.drop_share)
        self.rows = torch.cat([self.classes, self.text.background])
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if config.input_norm == "imagenet" else (clip.mean, clip.std)
        self.input_mean, self.input_std = mean, std

    def input_size(self, height: int, width: int, scale: float) -> tuple[int, int]:
        """The model input's size for an image at `scale`: a square of ``input_size`` (aspect not
        kept, as the authors), or the image's own patch-aligned size."""
        p = self.clip.patch_size
        if self.config.input_size is None:
            return patch_aligned_size(height, width, p, scale)
        side = max(p, round(self.config.input_size * scale / p) * p)
        return side, side

    def model_input(self, pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """uint8 HxWx3 on the device -> the normalised 3xH'xW' input (bilinear, no antialias)."""
        return to_model_input(pixels, size, self.input_mean, self.input_std, mode="bilinear")

    @torch.no_grad()
    def grid_maps(self, x: torch.Tensor, ids: list[list[int]]) -> GridMaps:
        """The maps of a batch of model inputs (Bx3xHxW) before and after the affinity."""
        cfg = self.config
        p = patch_size(self.clip.model)
        grid = (x.shape[-2] // p, x.shape[-1] // p)
        out = calibrated_tokens(self.clip.model, x, self.dense_layers, self.affinity_layers)
        v = self.clip.model.visual
        feats = v.ln_post(out.tokens)
        feats = feats @ v.proj if v.proj is not None else feats
        with full_precision(feats):
            feats = F.normalize(feats.float(), dim=1)                  # over the tokens, as the authors
            scores = surgery_maps(feats, self.rows)[:, 1:]             # B x N x T, class token dropped
            attention = torch.stack([a[:, 1:, 1:].float() for a in out.attention]).mean(0)
        raw, refined = [], []
        for b, i in enumerate(ids):
            maps = scores[b, :, i].T.reshape(len(i), *grid)
            raw.append(maps)
            if not len(i) or not cfg.affinity:
                refined.append(maps)
                continue
            aff = caa.affinity(attention[b], cfg.sinkhorn_iters, cfg.affinity_power)
            refined.append(caa.refine(maps, aff, cfg.box_threshold, border="reference"))
        return GridMaps(raw, refined)

    def _grid_cams(self, x: torch.Tensor, ids: list[list[int]]) -> list[torch.Tensor]:
        return self.grid_maps(x, ids).refined

    @torch.no_grad()
    def cam_tensors(self, images: list[np.ndarray], class_ids: list[list[int]]) -> list[torch.Tensor]:
        cams = self.multiscale(images, class_ids, self.config.scales, self._grid_cams, normalise=False)
        if not self.config.par_iters:
            return cams
        return [self.refine(img, c) if len(c) else c for img, c in zip(images, cams)]

    def refine(self, image: np.ndarray, cams: torch.Tensor) -> torch.Tensor:
        """PAR on an image's KxHxW CAMs with their background, as the authors' path ends
        (``wsss_ray.cam.par``); its guide is the model input at scale 1 brought back to the
        image's size, as theirs."""
        cfg = self.config
        pixels = torch.from_numpy(np.require(image, requirements=["C", "W"])).to(cams.device)
        guide = self.model_input(pixels, self.input_size(*image.shape[:2], 1.0))
        return par_cams(guide, cams, cfg.par_iters, cfg.par_dilations, cfg.par_max_side)
