"""Segmentation networks from torchvision, behind one builder and one checkpoint format.

Every model is a :class:`SegNet`: ``forward(images)`` gives logits NxCxHxW at the
input resolution (torchvision's ``["out"]``). Nothing is downloaded: weights start
random unless `backbone_weights` names a local file, except ``clip``: the frozen
image tower of a CLIP the project can load (``wsss_ray.clip``, the labelling job's
model specs) under a trained decoder (``wsss_ray.train.clipseg``). Its checkpoint
holds only what trained, with the tower's spec and the sha256 of its weights.
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

from wsss_ray.store import atomic_write

CHECKPOINT_FORMAT = "wsss-ray-segnet/1"
CLIP_OPTIONS = ("model", "pretrained", "unfreeze", "feature_blocks", "clip_scale", "feature_cache_mb")  # build_model(options=)


class SegNet(nn.Module):
    """A torchvision segmentation model whose forward returns the ``"out"`` logits tensor.

    `options` are the architecture's own build settings (``clip``: :data:`CLIP_OPTIONS`),
    kept so a checkpoint can rebuild the model.
    """

    def __init__(self, net: nn.Module, arch: str, num_classes: int, options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.net = net
        self.arch = arch
        self.num_classes = num_classes
        self.options = dict(options or {})

    def saved_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint holds: the whole state_dict, or for ``clip`` only what trains."""
        own = getattr(self.net, "trainable_state_dict", None)
        return self.state_dict() if own is None else {f"net.{k}": v for k, v in own().items()}

    def load_saved_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`saved_state` gave (strict: every key it names must be there, and no other)."""
        want = set(self.saved_state())
        missing, unexpected = want - set(state), set(state) - want
        if missing or unexpected:
            raise ValueError(f"the saved state does not fit this {self.arch!r} model: missing "
                             f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}; was it saved from "
                             f"another architecture or with other --unfreeze / --feature-blocks?")
        self.load_state_dict(state, strict=False)

    def checkpoint_meta(self) -> dict[str, Any]:
        """arch, num_classes, the build options and (``clip``) the backbone's weight hash."""
        meta = {"arch": self.arch, "num_classes": self.num_classes}
        if self.options:
            meta["options"] = {k: v for k, v in self.options.items() if k != "feature_cache_mb"}
        if hasattr(self.net, "backbone_sha256"):
            meta["backbone_sha256"] = self.net.backbone_sha256
        return meta

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


def _clip(num_classes: int, model: str | None = None, pretrained: str | None = None, unfreeze: int = 0,
          feature_blocks: int = 4, clip_scale: float = 1.0, feature_cache_mb: float = 0.0) -> nn.Module:
    """The frozen image tower of CLIP `model` (a spec of ``wsss_ray.clip.load_clip``) + a trained decoder."""
    from wsss_ray.clip import load_clip
    from wsss_ray.train.clipseg import ClipSegNet

    if not model:
        raise ValueError("--arch clip needs the labelling CLIP: pass --model (and --pretrained), or train on a "
                         "labelling job's output, whose rows name their model")
    clip = load_clip(model, pretrained)
    return ClipSegNet(clip.model, num_classes, clip.mean, clip.std, feature_blocks=feature_blocks,
                      unfreeze=unfreeze, scale=clip_scale, cache_mb=feature_cache_mb)


def _torchvision(name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        kwargs = {} if name.startswith("lraspp") else {"aux_loss": False}
        return getattr(tvseg, name)(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    return build


ARCHS: dict[str, Callable[[int], nn.Module]] = {  # names as in wsss_ray.config.ARCHS (train settings check them)
    "tiny": _tiny,
    "clip": _clip,
    "deeplabv3_mobilenet_v3_large": _torchvision("deeplabv3_mobilenet_v3_large"),
    "deeplabv3_resnet50": _torchvision("deeplabv3_resnet50"),
    "deeplabv3_resnet101": _torchvision("deeplabv3_resnet101"),
    "lraspp_mobilenet_v3_large": _torchvision("lraspp_mobilenet_v3_large"),
}


def build_model(num_classes: int, arch: str = "deeplabv3_mobilenet_v3_large",
                backbone_weights: str | Path | None = None, options: dict[str, Any] | None = None) -> SegNet:
    """A :class:`SegNet` with `num_classes` outputs (labelset size + 1 for background), randomly
    initialised but for ``clip``'s tower.

    `backbone_weights`: a local state_dict file (torch.save or .safetensors) loaded into
    ``model.backbone`` non-strictly; see :func:`load_backbone_weights`. `options`: the
    architecture's own settings (``clip``: :data:`CLIP_OPTIONS`, ``model`` required).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown --arch {arch!r}; choose from {sorted(ARCHS)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2 (background + one class), got {num_classes}")
    options = dict(options or {})
    allowed = CLIP_OPTIONS if arch == "clip" else ()
    if set(options) - set(allowed):
        raise ValueError(f"--arch {arch} takes no settings {sorted(set(options) - set(allowed))}; "
                         f"{'it takes ' + ', '.join(allowed) if allowed else 'only clip has its own settings'}")
    if arch == "clip" and backbone_weights is not None:
        raise ValueError("--arch clip takes its backbone from --model / --pretrained, not --backbone-weights")
    model = SegNet(ARCHS[arch](num_classes, **options), arch, num_classes, options)
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
    own = model.checkpoint_meta()
    for key in own:
        if key in meta and meta[key] != own[key]:
            raise ValueError(f"meta[{key!r}]={meta[key]!r} contradicts the model's {own[key]!r}")
    meta.update(own)
    try:
        json.dumps(meta)
    except TypeError as e:
        raise ValueError(f"checkpoint meta must be JSON-like: {e}") from None
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "meta": meta, "state_dict": model.saved_state()}, buf)
    atomic_write(str(path), buf.getvalue())
    return Path(path)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(saved state, meta) of a :func:`save_checkpoint` file, without building the model."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a wsss-ray segmentation checkpoint; write one with save_checkpoint()")
    return ckpt["state_dict"], ckpt["meta"]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[SegNet, dict[str, Any]]:
    """Rebuild the model saved by :func:`save_checkpoint`; returns (model in eval mode, meta).

    A ``clip`` checkpoint loads its backbone from the spec it names and refuses a backbone
    whose weights differ from the ones it was trained on.
    """
    state, meta = read_checkpoint(path, map_location)
    model = build_model(meta["num_classes"], meta["arch"], options=meta.get("options"))
    check_backbone(model, meta, path)
    model.load_saved_state(state)
    return model.to(map_location).eval(), meta


def check_backbone(model: SegNet, meta: dict[str, Any], path: str | Path) -> None:
    """Raise ValueError when `model`'s backbone weights are not those the checkpoint at `path` trained on."""
    want, have = meta.get("backbone_sha256"), model.checkpoint_meta().get("backbone_sha256")
    if want != have:
        spec = (meta.get("options") or {}).get("model")
        raise ValueError(f"{path} was trained on the {spec!r} backbone with weights sha256 {str(want)[:12]}..., but "
                         f"{spec!r} loads weights {str(have)[:12]}... here; give it the weights it trained on "
                         f"(the same --model / --pretrained files)")
