"""CLIP loading on top of open_clip: every model spec the project accepts.

``load_clip(spec)`` resolves every model spec the project accepts:

- ``toyclip``: the tiny CLIP bundled in the package (trained on the toy world);
- ``local-dir:PATH``: a folder with ``open_clip_config.json`` and weights, the format
  open_clip itself reads and the bundled model uses;
- an open_clip model name with ``pretrained`` = a tag (``ViT-B-16`` + ``openai``) or
  a local checkpoint file;
- ``hf-hub:ORG/REPO``.

Anything that needs a download is tried from the local cache first; when that
misses and the hub is unreachable, loading fails within seconds with a message
saying how to pass a local copy. What the CAM methods do inside the vision tower
is ``wsss_ray.vit``; making a toyclip is ``wsss_ray.toyworld.toyclip``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import open_clip

from wsss_ray.config import LOCAL_DIR, TOYCLIP, model_folder

HF_HUB = "hf-hub:"
_PACKAGE = resources.files("wsss_ray")
TOYCLIP_CONFIG: dict = json.loads(_PACKAGE.joinpath("model_configs", "toyclip.json").read_text())
open_clip.add_model_config(Path(str(_PACKAGE.joinpath("model_configs"))))


class ClipLoadError(RuntimeError):
    """A model spec could not be loaded; the message says what to do instead."""


@dataclass
class LoadedClip:
    """What :func:`load_clip` returns: the model (eval mode), its preprocess and tokenizer."""

    model: open_clip.CLIP
    preprocess: Callable
    tokenizer: Callable
    spec: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def patch_size(self) -> int:
        from wsss_ray.vit import patch_size

        return patch_size(self.model)


def bundled_toyclip_dir() -> Path:
    return model_folder(TOYCLIP)


def get_tokenizer(spec: str = TOYCLIP):
    return open_clip.get_tokenizer(spec)


# ------------------------------------------------------------------ loading


def parse_spec(spec: str) -> tuple[str, str]:
    """Split a model spec into (kind, value): kind is toyclip | local-dir | hf-hub | open_clip."""
    if spec == TOYCLIP:
        return TOYCLIP, str(bundled_toyclip_dir())
    if spec.startswith(LOCAL_DIR):
        return "local-dir", spec[len(LOCAL_DIR):]
    if spec.startswith(HF_HUB):
        return "hf-hub", spec[len(HF_HUB):]
    return "open_clip", spec


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """True if a TCP connection to `host` opens within `timeout` s (DNS included)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(result and result[0])


@contextlib.contextmanager
def _hf_offline():
    """Make huggingface_hub use its local cache only, for the duration of the block."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _create(name: str, pretrained: str | None, device: str, image_size: int | None):
    kwargs = {"device": device}
    if image_size:
        kwargs["force_image_size"] = image_size
    return open_clip.create_model_and_transforms(name, pretrained=pretrained, **kwargs)


def _needs_download(kind: str, pretrained: str | None) -> bool:
    return kind == "hf-hub" or (kind == "open_clip" and bool(pretrained) and not Path(pretrained).is_file())


def load_clip(spec: str = TOYCLIP, pretrained: str | None = None, device: str = "cpu",
              image_size: int | None = None) -> LoadedClip:
    """Load a CLIP model, preprocess and tokenizer for `spec` (see the module docstring).

    Args:
        spec: ``toyclip``, ``local-dir:PATH``, ``hf-hub:ORG/REPO`` or an open_clip model name.
        pretrained: for an open_clip name, a tag (``openai``) or a local weights file;
            ignored by the other kinds, as in open_clip.
        device: where to put the model.
        image_size: build the model for this input size (positional embeddings resized
            at load); CAM methods interpolate on the fly anyway, see :func:`vit_tokens`.
    """
    kind, value = parse_spec(spec)
    if kind in (TOYCLIP, "local-dir"):
        folder = Path(value)
        if not (folder / "open_clip_config.json").is_file():
            hint = ("the bundled toyclip weights are missing from the package; reinstall wsss-ray"
                    if kind == TOYCLIP else "pass a folder with open_clip_config.json and open_clip_model.safetensors")
            raise ClipLoadError(f"no open_clip_config.json in {folder}: {hint}")
        name = LOCAL_DIR + str(folder)
    elif kind == "hf-hub":
        name = spec
    else:
        if value not in open_clip.list_models():
            raise ClipLoadError(f"unknown open_clip model {value!r}; choose one of open_clip.list_models(), "
                                f"or use local-dir:PATH / hf-hub:ORG/REPO / toyclip")
        name = value
    try:
        if _needs_download(kind, pretrained):
            try:
                with _hf_offline():
                    model, _, preprocess = _create(name, pretrained, device, image_size)
            except Exception as cached_error:
                if not _hub_reachable():
                    raise ClipLoadError(
                        f"model {spec!r}{f' (pretrained={pretrained!r})' if pretrained else ''} is not in the local "
                        f"cache and the Hugging Face Hub is unreachable; download the weights on a machine with "
                        f"network access and pass --model local-dir:PATH (open_clip_config.json + weights) or "
                        f"--pretrained /path/to/weights.safetensors"
                    ) from cached_error
                model, _, preprocess = _create(name, pretrained, device, image_size)
        else:
            model, _, preprocess = _create(name, pretrained, device, image_size)
    except ClipLoadError:
        raise
    except Exception as e:  # surface open_clip's reason in one line
        raise ClipLoadError(f"could not load model {spec!r}: {type(e).__name__}: {e}") from e
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    mean = tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD))
    return LoadedClip(model, preprocess, tokenizer, spec, mean, std)
