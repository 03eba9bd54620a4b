"""The toy world: procedural images with exact masks, and the tiny CLIP trained on them."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from wsss_ray.store import atomic_write
from wsss_ray.labelset import ClassSpec, Labelset
from wsss_ray.masks import encode_png
from wsss_ray.toyworld.world import CLASSES, SPLIT_SEEDS, STUFF, SYNONYMS, Sample, render

__all__ = ["CLASSES", "SPLIT_SEEDS", "Sample", "default_collection", "generate", "render", "toyworld_labelset"]

TEMPLATE = "a photo of a {}."


def toyworld_labelset() -> Labelset:
    """The labelset of the toy world: its classes with synonyms, stuff words as background."""
    return Labelset(
        name="toyworld",
        classes=tuple(ClassSpec(c, SYNONYMS[c]) for c in CLASSES),
        templates=(TEMPLATE,),
        background=STUFF,
    )


def generate(out: str | Path, n: int, seed: int = 0, size: int = 64) -> Path:
    """Write n images (seeds seed..seed+n-1) as a DESIGN.md collection; returns the manifest path.

    Layout: ``out/manifest.jsonl``, ``out/labelset.yaml``, ``out/images/<id>.png``,
    ``out/masks/<id>.png``. Deterministic: the same arguments give the same bytes.
    """
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    out = Path(out)
    lines = []
    for s in range(seed, seed + n):
        sample = render(s, size)
        buf = _png(sample.image)
        atomic_write(str(out / "images" / f"{sample.id}.png"), buf)
        atomic_write(str(out / "masks" / f"{sample.id}.png"), encode_png(sample.mask))
        lines.append(json.dumps({
            "id": sample.id,
            "image": f"images/{sample.id}.png",
            "labels": list(sample.labels),
            "mask": f"masks/{sample.id}.png",
        }))
    atomic_write(str(out / "labelset.yaml"), toyworld_labelset().to_yaml().encode())
    manifest = out / "manifest.jsonl"
    atomic_write(str(manifest), ("\n".join(lines) + "\n").encode())
    return manifest


def default_collection(split: str, n: int, folder: str | Path | None = None) -> str:
    """The embedded default input of the jobs: `n` images of the toy world's `split` (``train``,
    ``val``, ``test``: each has its own seeds) under `folder` (``outputs/toyworld-SPLIT``); the manifest."""
    return str(generate(folder or f"outputs/toyworld-{split}", n, seed=SPLIT_SEEDS[split]))


def _png(rgb) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()
