"""Reading labelled image collections.

This first version reads a local manifest JSONL (DESIGN.md contract): one object
per line with ``id``, ``image``, ``labels`` and an optional ``mask``; paths are
relative to the manifest's folder or absolute. Images are decoded upright (EXIF
orientation applied) as RGB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps


@dataclass(frozen=True)
class Item:
    id: str
    image: str
    labels: tuple[str, ...]
    mask: str | None = None


def read_manifest(path: str | Path) -> list[Item]:
    """Items of a manifest JSONL; a malformed line raises ValueError naming the line."""
    path = Path(path)
    items = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            items.append(Item(str(rec["id"]), _resolve(path.parent, rec["image"]), tuple(rec["labels"]),
                              _resolve(path.parent, rec["mask"]) if rec.get("mask") else None))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{n}: not a manifest line with id, image and labels ({e})") from None
    return items


def _resolve(root: Path, p: str) -> str:
    return p if "://" in p or Path(p).is_absolute() else str(root / p)


def load_image(path: str) -> np.ndarray:
    """uint8 HxWx3 RGB, EXIF orientation applied."""
    with Image.open(path) as img:
        return np.array(ImageOps.exif_transpose(img).convert("RGB"))


def load_mask(path: str) -> np.ndarray:
    with Image.open(path) as img:
        return np.array(img)
