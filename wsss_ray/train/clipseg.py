"""A segmenter on the frozen CLIP that labelled the collection: its visual tower plus a light decoder.

Every other architecture starts from random weights, because nothing can be
downloaded; the labelling CLIP is the one pretrained backbone always at hand. As in
WeCLIP (Zhang et al., CVPR 2024), the image tower stays frozen and only a decoder
learns: the patch tokens after each of the last `feature_blocks` blocks are
layer-normed and projected (one linear map per block), summed, and mixed by two
3x3 convolutions on the patch grid. A coarse grid (toyclip: 8x8 at 64 px) cannot
draw object edges, so a shallow convolution stem on the image itself (stride 2)
brings the pixels back in: the grid features are upsampled onto it, two more 3x3
convolutions fuse them, and the logits are upsampled bilinearly to the input size.

`unfreeze` lets the last blocks train too. `cache_mb` keeps the frozen blocks'
outputs per distinct input crop (keyed by its bytes), so epochs whose augmentation
repeats crops (``aug_scales: [1.0]`` at the image size: two crops per image, as
flipped or not) run the frozen tower once per crop. Pure torch and open_clip.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import open_clip
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from wsss_ray.train.transforms import IMAGENET_MEAN, IMAGENET_STD
from wsss_ray.vit import patch_size, vit_tokens


def weights_sha256(module: nn.Module) -> str:
    """sha256 over a module's state_dict (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class FeatureCache:
    """Frozen-tower outputs per input crop, keyed by the crop's bytes, up to `limit_mb` (then no more)."""

    def __init__(self, limit_mb: float) -> None:
        self.limit = int(limit_mb * 2**20)
        self.used = 0
        self.entries: dict[bytes, tuple[torch.Tensor, ...]] = {}
        self.hits = self.misses = 0

    @staticmethod
    def key(image: torch.Tensor) -> bytes:
        return hashlib.blake2b(image.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes(),
                               digest_size=16).digest() + str(tuple(image.shape)).encode()

    def get(self, key: bytes) -> tuple[torch.Tensor, ...] | None:
        found = self.entries.get(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, key: bytes, value: tuple[torch.Tensor, ...]) -> None:
        size = sum(t.numel() * t.element_size() for t in value)
        if self.used + size <= self.limit:
            self.entries[key] = value
            self.used += size


class ClipSegNet(nn.Module):
    """Frozen CLIP image tower + light decoder; ``forward(images)`` -> logits NxCxHxW at the input size.

    ``forward`` returns ``{"out": logits}`` as torchvision's segmentation models do.

    Args:
        clip_model: an open_clip CLIP with a ViT image tower; only ``visual`` is kept.
        clip_mean, clip_std: the CLIP's own normalisation; inputs arrive ImageNet-normalised
            like every :class:`~wsss_ray.train.model.SegNet`'s and are re-normalised here.
        feature_blocks: how many of the last blocks feed the decoder.
        unfreeze: how many of the last blocks train with the decoder (0: the tower is frozen).
        scale: the tower sees the input resized by this factor (to a patch multiple).
        width: the decoder's channels.
        cache_mb: memory for cached frozen outputs (0: no cache); see :class:`FeatureCache`.
    """

    def __init__(self, clip_model: nn.Module, num_classes: int, clip_mean, clip_std, feature_blocks: int = 4,
                 unfreeze: int = 0, scale: float = 1.0, width: int = 64, cache_mb: float = 0.0) -> None:
        super().__init__()
        if not isinstance(getattr(clip_model, "visual", None), open_clip.transformer.VisionTransformer):
            raise ValueError(f"--arch clip needs a CLIP with a ViT image tower, got "
                             f"{type(getattr(clip_model, 'visual', clip_model)).__name__}; use a ViT model")
        blocks = clip_model.visual.transformer.resblocks
        depth = len(blocks)
        if not 1 <= feature_blocks <= depth:
            raise ValueError(f"feature_blocks must lie in [1, {depth}] for this model, got {feature_blocks}")
        if not 0 <= unfreeze <= depth:
            raise ValueError(f"unfreeze must lie in [0, {depth}] for this model, got {unfreeze}")
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.clip = nn.Module()  # holds `visual` alone, as wsss_ray.vit expects of a CLIP; the text tower goes
        self.clip.visual = clip_model.visual
        self.backbone_sha256 = weights_sha256(self.clip.visual)
        self.depth, self.feature_blocks, self.unfreeze, self.scale = depth, feature_blocks, unfreeze, scale
        self.patch = patch_size(self.clip)
        for name, p in self.clip.named_parameters():
            p.requires_grad_(self._trainable(name))
        in_std, in_mean = torch.tensor(IMAGENET_STD), torch.tensor(IMAGENET_MEAN)
        c_std, c_mean = torch.tensor(clip_std, dtype=torch.float32), torch.tensor(clip_mean, dtype=torch.float32)
        self.register_buffer("renorm_scale", (in_std / c_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("renorm_shift", ((in_mean - c_mean) / c_std).view(1, 3, 1, 1), persistent=False)
        dim = clip_model.visual.transformer.width
        c = Conv2dNormActivation
        self.decoder = nn.ModuleDict(OrderedDict(
            project=nn.ModuleList(nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, width))
                                  for _ in range(feature_blocks)),
            grid=nn.Sequential(c(width, width), c(width, width)),
            stem=nn.Sequential(c(3, 32, stride=2), c(32, 32)),
            fuse=nn.Sequential(c(width + 32, width), c(width, width)),
            classify=nn.Conv2d(width, num_classes, 1),
        ))
        self.cache = FeatureCache(cache_mb) if cache_mb > 0 else None

    # ---------------------------------------------------------------- parts

    @property
    def backbone(self) -> nn.Module:
        return self.clip.visual

    def _trainable(self, name: str) -> bool:
        """Whether the CLIP parameter `name` trains: only the last `unfreeze` blocks' do."""
        prefix = "visual.transformer.resblocks."
        if not name.startswith(prefix):
            return False
        return int(name[len(prefix):].split(".")[0]) >= self.depth - self.unfreeze

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint holds: the decoder and the unfrozen blocks (the rest is the named backbone)."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items()
                if k in names or k.startswith("decoder.")}  # the decoder's BatchNorm statistics too

    def train(self, mode: bool = True) -> "ClipSegNet":
        super().train(mode)
        self.clip.eval()  # a frozen tower stays as loaded (no dropout); unfrozen blocks have no BatchNorm
        return self

    def _tower_input(self, images: torch.Tensor) -> torch.Tensor:
        x = images * self.renorm_scale + self.renorm_shift
        h, w = images.shape[-2:]
        size = (max(self.patch, round(h * self.scale / self.patch) * self.patch),
                max(self.patch, round(w * self.scale / self.patch) * self.patch))
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=size[0] < h)
        return x

    def _frozen(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The frozen blocks' work: the outputs of the frozen blocks that feed the decoder, then
        (when blocks are unfrozen) the tokens entering the first unfrozen block."""
        with torch.no_grad():
            tokens, _ = vit_tokens(self.clip, x, stop_at=0)
            outs = []
            for i, block in enumerate(self.clip.visual.transformer.resblocks[:self.depth - self.unfreeze]):
                tokens = block(tokens)
                if i >= self.depth - self.feature_blocks:
                    outs.append(tokens)
        return (*outs, tokens) if self.unfreeze else tuple(outs)

    def _cached_frozen(self, images: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.cache is None:
            return self._frozen(x)
        keys = [self.cache.key(im) for im in images]
        found = [self.cache.get(k) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            computed = self._frozen(x[missing])
            for j, i in enumerate(missing):
                found[i] = tuple(t[j].clone() for t in computed)
                self.cache.put(keys[i], found[i])
        return tuple(torch.stack(parts) for parts in zip(*found))

    # ---------------------------------------------------------------- forward

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: float Nx3xHxW, ImageNet-normalised -> ``{"out": logits float NxCxHxW}``."""
        x = self._tower_input(images)
        gh, gw = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        frozen = self._cached_frozen(images, x)
        first_free = self.depth - self.unfreeze
        features = list(frozen[:-1] if self.unfreeze else frozen)
        tokens = frozen[-1]
        for i, block in enumerate(self.clip.visual.transformer.resblocks[first_free:], start=first_free):
            tokens = block(tokens)
            if i >= self.depth - self.feature_blocks:
                features.append(tokens)
        d = self.decoder
        grid = sum(project(f[:, 1:]) for project, f in zip(d["project"], features))
        grid = d["grid"](grid.transpose(1, 2).reshape(len(images), -1, gh, gw))
        stem = d["stem"](images)
        grid = F.interpolate(grid, size=stem.shape[-2:], mode="bilinear", align_corners=False)
        logits = d["classify"](d["fuse"](torch.cat([grid, stem], dim=1)))
        return {"out": F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)}


__all__ = ["ClipSegNet", "FeatureCache", "weights_sha256"]
