"""The toy world: procedural images with exact masks, and the tiny CLIP trained on them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from PIL import Image

from wsss_ray.labelset import ClassSpec, Labelset
from wsss_ray.masks import encode_png
from wsss_ray.toyworld.world import CLASSES, SPLIT_SEEDS, STUFF, SYNONYMS, Sample, render

__all__ = ["CLASSES", "SPLIT_SEEDS", "Sample", "generate", "render", "toyworld_labelset"]

TEMPLATE = "a photo of a {}."


def toyworld_labelset() -> Labelset:
    """The labelset of the toy world: its classes with synonyms, stuff words as background."""
    return Labelset(
        name="toyworld",
        classes=tuple(ClassSpec(c, SYNONYMS[c]) for c in CLASSES),
        templates=(TEMPLATE,),
        background=STUFF,
    )


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def generate(out: str | Path, n: int, seed: int = 0, size: int = 64) -> Path:
    """Write n images (seeds seed..seed+n-1) as a DESIGN.md collection; returns the manifest path.

    Layout: ``out/manifest.jsonl``, ``out/labelset.yaml``, ``out/images/<id>.png``,
    ``out/masks/<id>.png``. Deterministic: the same arguments give the same bytes.
    """
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    lines = []
    for s in range(seed, seed + n):
        sample = render(s, size)
        buf = _png(sample.image)
        _write_atomic(out / "images" / f"{sample.id}.png", buf)
        _write_atomic(out / "masks" / f"{sample.id}.png", encode_png(sample.mask))
        lines.append(json.dumps({
            "id": sample.id,
            "image": f"images/{sample.id}.png",
            "labels": list(sample.labels),
            "mask": f"masks/{sample.id}.png",
        }))
    _write_atomic(out / "labelset.yaml", toyworld_labelset().to_yaml().encode())
    manifest = out / "manifest.jsonl"
    _write_atomic(manifest, ("\n".join(lines) + "\n").encode())
    return manifest


def _png(rgb) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def embedded_default(folder: str | Path = "outputs/toyworld-test", n: int = 200):
    """The no-flags run's input and settings: n test-split images and the toy world's label config.

    Returns (manifest path, LabelConfig). Generation is deterministic, so re-runs rewrite the same files.
    """
    from importlib import resources

    from wsss_ray.config import load_label_config

    manifest = generate(folder, n, seed=SPLIT_SEEDS["test"])
    return str(manifest), load_label_config(str(resources.files("wsss_ray").joinpath("configs", "toyworld.yaml")))
