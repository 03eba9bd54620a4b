"""Render a picture grid of toy-world test images: image, ground truth, CAM, pseudo-mask.

    .venv/bin/python benchmarks/cam_grid.py [--out docs/images/toyworld_grid.png] [--n 12]

Rows, top to bottom: the image; the exact mask; the CAM of the image's first label
(with the --config settings); the pseudo-mask of the full pipeline (white = ignored,
confidence below the threshold).
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from wsss_ray.clip import load_clip
from wsss_ray.config import load_label_config
from wsss_ray.labeler import LabelConfig, Labeler
from wsss_ray.labelset import load_labelset
from wsss_ray.masks import colorize
from wsss_ray.toyworld.evaluate import split_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/images/toyworld_grid.png")
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--model", default="toyclip")
    parser.add_argument("--zoom", type=int, default=3)
    parser.add_argument("--config", default="wsss_ray/configs/toyworld.yaml", help="label settings (YAML)")
    args = parser.parse_args()
    samples = split_samples("test", args.n)
    config = load_label_config(args.config) if args.config else LabelConfig()
    labeler = Labeler(load_clip(args.model), load_labelset("toyworld"), config)
    results = labeler.label([s.image for s in samples], [list(s.labels) for s in samples])
    columns = []
    for s, r in zip(samples, results):
        cam = (np.repeat(r.cams[0][..., None], 3, -1) * 255).astype(np.uint8)
        columns.append(np.concatenate([s.image, colorize(s.mask), cam, colorize(r.mask)], axis=0))
    grid = np.concatenate(columns, axis=1).repeat(args.zoom, 0).repeat(args.zoom, 1)
    Image.fromarray(grid).save(args.out)
    print(f"wrote {args.out}: {args.n} test images; labels: {[list(s.labels) for s in samples]}")


if __name__ == "__main__":
    main()
