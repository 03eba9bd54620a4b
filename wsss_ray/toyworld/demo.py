"""The embedded default demo: a toy-world sample grid and the bundled toyclip's zero-shot mAP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from wsss_ray.masks import colorize


def sample_grid(samples, columns: int = 8, zoom: int = 3) -> np.ndarray:
    """Image rows with their coloured ground-truth masks beneath, as one RGB array."""
    cells = [np.concatenate([s.image, colorize(s.mask)], axis=0) for s in samples]
    while len(cells) % columns:
        cells.append(np.zeros_like(cells[0]))
    rows = [np.concatenate(cells[i:i + columns], axis=1) for i in range(0, len(cells), columns)]
    grid = np.concatenate(rows, axis=0)
    return grid.repeat(zoom, 0).repeat(zoom, 1)


def run_demo(out: str | Path, n: int = 200) -> dict:
    """Write ``out/toyworld_sample.png`` and score the bundled toyclip on n test images."""
    from wsss_ray.clip import load_clip
    from wsss_ray.toyworld.evaluate import split_samples
    from wsss_ray.toyworld.train_clip import zero_shot_map

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    samples = split_samples("test", n)
    grid_path = out / "toyworld_sample.png"
    Image.fromarray(sample_grid(samples[:16])).save(grid_path)
    clip = load_clip("toyclip")
    return {"sample_grid": str(grid_path), "test_images": n,
            "toyclip_zero_shot_map": round(zero_shot_map(clip.model, clip.tokenizer, samples), 4)}
