"""Render a picture grid of toy-world test images: image, ground truth, CAM, pseudo-mask.

    .venv/bin/python benchmarks/cam_grid.py [--out docs/images/toyworld_grid.png] [--n 12]

Rows, top to bottom: the image; the exact mask; the CAM of the image's first label;
the pseudo-mask of the full pipeline (white = ignored: confidence below
--min-confidence, as CGL training and ``export --min-confidence`` apply it; 0 shows
the full argmax). Settings: the model's own label settings (toyclip's bundled
label_config.yaml), overridden by --config (a settings YAML: ``clip_es: {...}``,
``post: {...}``).
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from wsss_ray.config import resolve_label_job
from wsss_ray.labeler import Labeler
from wsss_ray.masks import colorize, ignore_below
from wsss_ray.toyworld.evaluate import split_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/images/toyworld_grid.png")
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--model", default="toyclip")
    parser.add_argument("--zoom", type=int, default=3)
    parser.add_argument("--config", default=None,
                        help="settings YAML over the model's own label settings (default: none)")
    parser.add_argument("--min-confidence", type=float, default=0.95,
                        help="pixels below this confidence are drawn as ignored (white); 0: full argmax")
    args = parser.parse_args()
    samples = split_samples("test", args.n)
    config = resolve_label_job({"model": args.model, "labelset": "toyworld"}, args.config)
    labeler = Labeler.from_config(config)
    results = labeler.label([s.image for s in samples], [list(s.labels) for s in samples])
    columns = []
    for s, r in zip(samples, results):
        cam = (np.repeat(r.cams[0][..., None], 3, -1) * 255).astype(np.uint8)
        mask = ignore_below(r.mask, r.confidence, args.min_confidence)
        columns.append(np.concatenate([s.image, colorize(s.mask), cam, colorize(mask)], axis=0))
    grid = np.concatenate(columns, axis=1).repeat(args.zoom, 0).repeat(args.zoom, 1)
    Image.fromarray(grid).save(args.out)
    print(f"wrote {args.out}: {args.n} test images; labels: {[list(s.labels) for s in samples]}")


if __name__ == "__main__":
    main()
