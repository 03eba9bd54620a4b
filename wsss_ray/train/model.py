"""Segmentation networks from torchvision, behind one builder and one checkpoint format.

Every model is a :class:`SegNet`: ``forward(images)`` gives logits NxCxHxW at the
input resolution (torchvision's ``["out"]``). Nothing is downloaded: weights start
random unless `backbone_weights` names a local file.
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torchvision.models import segmentation as tvseg
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabV3
from torchvision.ops.misc import Conv2dNormActivation

from wsss_ray.files import atomic_write

CHECKPOINT_FORMAT = "wsss-ray-segnet/1"


class SegNet(nn.Module):
    """A torchvision segmentation model whose forward returns the ``"out"`` logits tensor."""

    def __init__(self, net: nn.Module, arch: str, num_classes: int) -> None:
        super().__init__()
        self.net = net
        self.arch = arch
        self.num_classes = num_classes

    @property
    def backbone(self) -> nn.Module:
        return self.net.backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: float Nx3xHxW, normalised -> logits float NxCxHxW."""
        return self.net(images)["out"]


def _tiny(num_classes: int) -> nn.Module:
    """A DeepLabV3 small enough for CPU tests: 3-stage conv backbone (stride 8) + 64-channel ASPP.

    Built from torchvision parts (DeepLabV3, ASPP, Conv2dNormActivation) because
    deeplabv3_mobilenet_v3_large takes 0.3-0.45 s per forward+backward of 16x3x64x64
    on 2 CPU cores; this one takes ~0.04-0.05 s. Train it with batches of 2 or more
    (ASPP's pooling branch has a BatchNorm over 1x1 maps).
    """
    c = Conv2dNormActivation
    body = nn.Sequential(OrderedDict(
        stem=c(3, 16, stride=2),
        stage1=nn.Sequential(c(16, 32, stride=2), c(32, 32)),
        stage2=nn.Sequential(c(32, 64, stride=2), c(64, 64)),
    ))
    head = nn.Sequential(ASPP(64, [2, 4, 6], out_channels=64), c(64, 64), nn.Conv2d(64, num_classes, 1))
    return DeepLabV3(IntermediateLayerGetter(body, {"stage2": "out"}), head, None)


def _torchvision(name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        kwargs = {} if name.startswith("lraspp") else {"aux_loss": False}
        return getattr(tvseg, name)(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    return build


ARCHS: dict[str, Callable[[int], nn.Module]] = {  # names as in wsss_ray.config.ARCHS (train settings check them)
    "tiny": _tiny,
    "deeplabv3_mobilenet_v3_large": _torchvision("deeplabv3_mobilenet_v3_large"),
    "deeplabv3_resnet50": _torchvision("deeplabv3_resnet50"),
    "deeplabv3_resnet101": _torchvision("deeplabv3_resnet101"),
    "lraspp_mobilenet_v3_large": _torchvision("lraspp_mobilenet_v3_large"),
}


def build_model(num_classes: int, arch: str = "deeplabv3_mobilenet_v3_large",
                backbone_weights: str | Path | None = None) -> SegNet:
    """A randomly initialised :class:`SegNet` with `num_classes` outputs (labelset size + 1 for background).

    `backbone_weights`: a local state_dict file (torch.save or .safetensors) loaded into
    ``model.backbone`` non-strictly; see :func:`load_backbone_weights`.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown --arch {arch!r}; choose from {sorted(ARCHS)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2 (background + one class), got {num_classes}")
    model = SegNet(ARCHS[arch](num_classes), arch, num_classes)
    if backbone_weights is not None:
        load_backbone_weights(model, backbone_weights)
    return model


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f"{path} does not hold a state_dict (got {type(sd).__name__})")
    return sd


def load_backbone_weights(model: SegNet, path: str | Path) -> list[str]:
    """Load the tensors of `path` whose name and shape match ``model.backbone``; returns the loaded names.

    Keys may carry a ``module.``, ``backbone.`` or ``features.`` prefix (DDP, a full
    segmentation model, a torchvision classifier); the reading that matches most keys
    wins. Raises ValueError when no key matches.
    """
    sd = _read_state_dict(path)
    own = model.backbone.state_dict()
    best: dict[str, torch.Tensor] = {}
    for prefix in ("", "module.", "backbone.", "module.backbone.", "features."):
        cand = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        cand = {k: v for k, v in cand.items() if k in own and own[k].shape == v.shape}
        if len(cand) > len(best):
            best = cand
    if not best:
        raise ValueError(f"no tensor in {path} matches the {model.arch!r} backbone by name and shape "
                         f"(file has e.g. {sorted(sd)[:3]}, backbone has e.g. {sorted(own)[:3]})")
    model.backbone.load_state_dict(best, strict=False)
    return sorted(best)


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any] | None = None) -> Path:
    """Write weights + meta (arch, num_classes, and whatever `meta` adds) to one file, atomically.

    A DDP-wrapped model is unwrapped. `meta` must be JSON-like (dict/list/str/number/
    bool/None) so the file loads with ``torch.load(weights_only=True)``.
    """
    model = getattr(model, "module", model)
    if not isinstance(model, SegNet):
        raise TypeError(f"save_checkpoint expects a SegNet from build_model, got {type(model).__name__}")
    meta = dict(meta or {})
    for key in ("arch", "num_classes"):
        if key in meta and meta[key] != getattr(model, key):
            raise ValueError(f"meta[{key!r}]={meta[key]!r} contradicts the model's {getattr(model, key)!r}")
    meta.update(arch=model.arch, num_classes=model.num_classes)
    try:
        json.dumps(meta)
    except TypeError as e:
        raise ValueError(f"checkpoint meta must be JSON-like: {e}") from None
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "meta": meta, "state_dict": model.state_dict()}, buf)
    atomic_write(str(path), buf.getvalue())
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[SegNet, dict[str, Any]]:
    """Rebuild the model saved by :func:`save_checkpoint`; returns (model in eval mode, meta)."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a wsss-ray segmentation checkpoint; write one with save_checkpoint()")
    meta = ckpt["meta"]
    model = build_model(meta["num_classes"], meta["arch"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(map_location).eval(), meta
