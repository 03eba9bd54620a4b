"""The tagger: an image's labels proposed by the labelling CLIP, for items that come without them.

TagCLIP (Lin et al., AAAI 2024) makes a frozen CLIP a multi-label classifier
without training, local to global: classify every patch, refine the patch
classification with the attention of the earlier blocks, then classify each
candidate class again on its own region and fuse that with the image's global
classification. Here, on the project's ViT hooks (``wsss_ray.vit``):

1. **global**: the model's own image embedding against the class prompts and the
   labelset's background words (one softmax, the model's logit scale); with
   ``flip``, averaged with the mirrored image's;
2. **patches**: each patch token, through ``ln_post`` and the projection, against the
   same texts (:func:`patch_probs`);
3. **refinement** (``refine``): the head-averaged attention of every block but the
   last, patch to patch, with TagCLIP's mask (entries below their row's mean
   dropped, rows renormalised) spreads each patch's classification over the
   patches it attends to (:func:`refine_patches`);
4. **class-wise reidentification** (``reidentify``): for each of the ``candidates``
   best classes, the bounding box of the patches scoring at least ``region`` of its
   best patch (:func:`class_box`) is cut out *in token space*, only those patches
   and their positional embeddings entering the tower, and classified globally
   again (a box of nearly the whole grid is the image: its global classification
   stands for it, no second pass). TagCLIP crops the image and resizes the crop; a
   token crop keeps the objects at the scale the model saw them, which a 64-pixel
   model needs;
5. **fusion**: ``global_weight * global + (1 - global_weight) * local``, the local
   score being the reidentification's (or, without it, the refined patches' maximum);
   a class at or above ``threshold`` is a label, at most ``top_k`` (:func:`select`).

``kind: global`` is step 1 alone: the baseline the tagger is measured against
(docs/RESULTS.md). Pure torch and numpy; the model runs on the caller's device
and autocast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from wsss_ray.cam.gradcam import to_model_input
from wsss_ray.cam.prompts import TextFeatures, text_features
from wsss_ray.clip import LoadedClip
from wsss_ray.config import TaggerConfig
from wsss_ray.labelset import Labelset
from wsss_ray.vit import image_embedding, patch_embeddings, vit_tokens


@dataclass
class Tags:
    """One image's proposed labels, best first, with their scores, and the score of every
    class of the labelset (float32, labelset order; for ranking metrics such as mAP)."""

    labels: list[str]
    scores: list[float]
    class_scores: np.ndarray


def select(class_scores: np.ndarray, names: list[str], threshold: float, top_k: int | None) -> Tags:
    """The classes scoring at least `threshold`, best first, at most `top_k` (None: all)."""
    order = [int(c) for c in np.argsort(-class_scores, kind="stable") if class_scores[c] >= threshold][:top_k]
    return Tags([names[c] for c in order], [float(class_scores[c]) for c in order],
                class_scores.astype(np.float32))


def refine_patches(probs: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """BxNxC patch classifications spread along BxNxN patch-to-patch attention, TagCLIP's mask applied:
    a row's entries below its mean are dropped and the row renormalised, so each patch takes the
    classes of the patches it attends to most, not a blur of all of them."""
    kept = torch.where(attention >= attention.mean(-1, keepdim=True), attention, torch.zeros_like(attention))
    return (kept / kept.sum(-1, keepdim=True).clamp_min(1e-12)) @ probs


def class_box(scores: torch.Tensor, grid: tuple[int, int], region: float) -> torch.Tensor:
    """N booleans (row-major over the gh x gw `grid`): the bounding box of the patches whose `scores`
    are at least `region` times the best one's."""
    on = (scores >= region * scores.max()).view(grid).nonzero()
    (y0, x0), (y1, x1) = on.min(0).values.tolist(), on.max(0).values.tolist()
    box = torch.zeros(grid, dtype=torch.bool, device=scores.device)
    box[y0:y1 + 1, x0:x1 + 1] = True
    return box.flatten()


WHOLE_BOX = 0.9  # a class box covering this share of the patch grid is classified as the whole image


class Tagger:
    """Proposes labels for batches of uint8 HxWx3 RGB images with a loaded CLIP (see the module docstring)."""

    def __init__(self, config: TaggerConfig, clip: LoadedClip, labelset: Labelset, text: TextFeatures | None = None):
        self.config, self.clip, self.labelset = config, clip, labelset
        model = clip.model
        self.text = text or text_features(model, clip.tokenizer, labelset, config.templates, "concat", True)
        self.rows = torch.cat([self.text.classes, self.text.background]).float()
        self.logit_scale = float(model.logit_scale.detach().exp()) if hasattr(model, "logit_scale") else 100.0
        native = model.visual.image_size
        self.side = config.side or int(max(native) if isinstance(native, (tuple, list)) else native)
        p = clip.patch_size
        self.side = max(p, self.side // p * p)
        self.grid = (self.side // p, self.side // p)

    @property
    def device(self) -> torch.device:
        return next(self.clip.model.parameters()).device

    def classify(self, embeddings: torch.Tensor) -> torch.Tensor:
        """...xE embeddings -> ...xC class probabilities: one softmax over the classes and the
        background words (the background words' share is dropped); float32 whatever the model's autocast."""
        with torch.autocast(embeddings.device.type, enabled=False):
            logits = self.logit_scale * F.normalize(embeddings.float(), dim=-1) @ self.rows.T
            return torch.softmax(logits, dim=-1)[..., :len(self.labelset)]

    @torch.no_grad()
    def scores(self, images: list[np.ndarray]) -> np.ndarray:
        """BxC float32 class scores in [0, 1] (see the module docstring)."""
        if not images:
            return np.zeros((0, len(self.labelset)), np.float32)
        c, model = self.config, self.clip.model
        x = torch.stack([to_model_input(img, (self.side, self.side), self.clip.mean, self.clip.std)
                         for img in images]).to(self.device)
        blocks = len(model.visual.transformer.resblocks)
        tokens, attentions = vit_tokens(model, x, capture=blocks if c.kind == "tagclip" and c.refine else 0)
        whole = self.classify(image_embedding(model, tokens))
        if c.flip:
            whole = (whole + self.classify(image_embedding(model, vit_tokens(model, x.flip(-1))[0]))) / 2
        if c.kind == "global":
            return whole.cpu().numpy()
        patches = self.classify(patch_embeddings(model, tokens))
        if c.refine and len(attentions) > 1:
            attention = torch.stack([a[:, 1:, 1:].float() for a in attentions[:-1]]).mean(0)
            patches = refine_patches(patches, attention)
        local = patches.amax(1)
        if c.reidentify:
            local = self._reidentify(x, patches, (whole + local) / 2, whole)
        return (c.global_weight * whole + (1 - c.global_weight) * local).cpu().numpy()

    def _reidentify(self, x: torch.Tensor, patches: torch.Tensor, ranking: torch.Tensor, whole: torch.Tensor
                    ) -> torch.Tensor:
        """BxC: each image's `candidates` best classes (by `ranking`) classified again on the token
        crop of their own region; 0 for the other classes. A region whose box covers at least
        WHOLE_BOX of the grid is the image itself: its classification `whole` stands for the crop."""
        out = torch.zeros_like(ranking)
        crops: dict[int, list[tuple[int, int, torch.Tensor]]] = {}  # crops of the same token count run together
        k = min(self.config.candidates, ranking.shape[1])
        for b, classes in enumerate(ranking.topk(k, dim=1).indices.tolist()):
            for cls in classes:
                box = class_box(patches[b, :, cls], self.grid, self.config.region)
                if box.sum() >= WHOLE_BOX * box.numel():
                    out[b, cls] = whole[b, cls]
                else:
                    crops.setdefault(int(box.sum()), []).append((b, cls, box))
        for group in crops.values():
            images = torch.tensor([b for b, _, _ in group], device=x.device)
            tokens, _ = vit_tokens(self.clip.model, x[images], keep=torch.stack([box for _, _, box in group]))
            probs = self.classify(image_embedding(self.clip.model, tokens))
            for (b, cls, _), p in zip(group, probs):
                out[b, cls] = p[cls]
        return out

    def tags(self, images: list[np.ndarray]) -> list[Tags]:
        """Per image, the labels proposed (threshold and top-k of the settings) and the scores."""
        names = [cls.name for cls in self.labelset.classes]
        return [select(s, names, self.config.threshold, self.config.top_k) for s in self.scores(images)]


__all__ = ["Tagger", "Tags", "class_box", "refine_patches", "select"]
