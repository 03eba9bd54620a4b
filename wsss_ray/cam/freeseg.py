"""FreeSeg on a frozen CLIP: CAMs from the dense image-text similarity map, without gradients.

FreeSeg (Li et al., arXiv 2209.13558) takes the image-text similarity map (ITSM) of
an interpretable CLIP as a free mask, cleans it with smoothed min pooling, lets only
the image's own labels compete (partial-label strategy) and takes a per-pixel
argmax with confidence selection (pixel strategy). No code was published; its ICLIP
backbone needs re-training. Here CLIP stays frozen and the known training-free fix
for CLIP's "opposite visualisation" (its raw ITSM lights up the background) is used
instead: CLIP Surgery's value-value attention path in the last blocks (Li et al.,
arXiv 2304.05653), plus, as an option, its feature surgery (subtracting what the
competing texts have in common). The exact pooling operator is not published; the
one here is defined in :func:`smoothed_min_pool`. Settings: :class:`FreeSegConfig`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from wsss_ray.cam.base import TextCamMethod
from wsss_ray.cam.gradcam import minmax
from wsss_ray.config import FreeSegConfig
from wsss_ray.vit import patch_embeddings, patch_size, surgery_tokens


def smoothed_min_pool(maps: torch.Tensor, window: int, temperature: float) -> torch.Tensor:
    """Soft minimum over each `window` x `window` neighbourhood (stride 1, same size, border replicated).

    out(p) = -t * log( mean over q in W(p) of exp(-x(q) / t) ). It lies between the
    hard minimum of the window (t -> 0: a grey-scale erosion) and its mean (t -> inf),
    so a response survives only where its neighbours respond too. maps: KxHxW.
    """
    if window == 1:
        return maps
    k, h, w = maps.shape
    pad = window // 2
    x = F.pad(-maps[:, None] / temperature, (pad, pad, pad, pad), mode="replicate")
    patches = F.unfold(x, window)                                   # K x window² x (H*W)
    soft = torch.logsumexp(patches, dim=1) - math.log(window * window)
    return (-temperature * soft).view(k, h, w)


def itsm_scores(patches: torch.Tensor, text: torch.Tensor, targets: list[int], score: str,
                logit_scale: float) -> torch.Tensor:
    """Per target text, its score at each patch: KxN from NxE patch and TxE text embeddings.

    Both are L2-normalised here; the rows of `text` are the competitors (the image's
    classes, then background words). ``softmax``: the target's probability in a softmax
    over the competitors at `logit_scale`; ``surgery``: its cosine similarity minus the
    mean over the competitors.
    """
    sim = F.normalize(patches, dim=-1) @ F.normalize(text, dim=-1).T          # N x T
    if score == "softmax":
        sim = (logit_scale * sim).softmax(-1)
    elif score == "surgery":
        sim = sim - sim.mean(-1, keepdim=True)
    else:
        raise ValueError(f"freeseg score must be 'softmax' or 'surgery', got {score!r}")
    return sim[:, targets].T


class FreeSeg(TextCamMethod):
    """FreeSeg-style CAMs: ITSM through CLIP Surgery's value path, partial labels, smoothed min pooling."""

    config_class = FreeSegConfig

    @torch.no_grad()
    def cam_tensors(self, images: list[np.ndarray], class_ids: list[list[int]]) -> list[torch.Tensor]:
        return self.multiscale(images, class_ids, self.config.scales, self._grid_cams)

    def _grid_cams(self, x: torch.Tensor, ids: list[list[int]]) -> list[torch.Tensor]:
        cfg = self.config
        model = self.clip.model
        p = patch_size(model)
        grid = (x.shape[-2] // p, x.shape[-1] // p)
        feats = patch_embeddings(model, surgery_tokens(model, x, cfg.surgery_layers))
        scale = float(model.logit_scale.exp())
        out = []
        for b, i in enumerate(ids):
            rows, targets = self.text.for_image(i, "present")
            maps = itsm_scores(feats[b], rows, targets, cfg.score, scale).reshape(len(i), *grid)
            out.append(minmax(smoothed_min_pool(maps, cfg.window, cfg.temperature)) if len(i) else maps)
        return out
