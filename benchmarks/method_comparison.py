"""CLIP-ES, ExCEL, SemPLeS and FreeSeg side by side on the toy world's test split, with the bundled toyclip.

    .venv/bin/python jobs/learn_prompts.py --output outputs/prompts          # SemPLeS's prompts first
    .venv/bin/python benchmarks/method_comparison.py --prompts outputs/prompts --n 500 \\
        [--config clip-es=FILE --config semples=FILE --config freeseg=FILE] [--grid docs/images/methods_grid.png]

Each method runs with toyclip's own label settings (its label_config.yaml), then the
--config file given for it (the ``best_config.yaml`` of its sweep on val). Prints:

- mIoU on `--n` test images (seeds test+60,000..., used by no default run or sweep);
- per-class IoU, with how often each class's images show its home scene (the
  co-occurrence SemPLeS and FreeSeg target): the lower stuff of the class's home;
- how much of each CAM's mass lies on its own object, and its AUC (before background score and CRF);
- images/s per method, one process and one thread: the CAMs alone and CAMs + CRF.

With --grid it also writes a picture of the first 12 images: image, truth, then for
each method the CAM of the image's first label and the pseudo-mask (white = ignored:
confidence below --min-confidence, as CGL training and ``export --min-confidence``
apply it; 0 shows the full argmax). The toy world's example grid in docs/RESULTS.md:

    .venv/bin/python benchmarks/method_comparison.py --methods clip-es --n 12 --offset 0 \
        --grid docs/images/toyworld_grid.png
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

METHODS = ("clip-es", "excel", "semples", "freeseg")


def labeler_for(method: str, prompts: str | None, config: str | None):
    from wsss_ray.config import resolve_label_job
    from wsss_ray.labeler import Labeler

    given = {"model": "toyclip", "labelset": "toyworld", "method": method}
    if method == "semples":
        given["semples"] = {"prompts": prompts}
    return Labeler.from_config(resolve_label_job(given, config))


def home_share(samples) -> dict[str, float]:
    """Per class: the share of images holding it whose lower stuff is the class's home one."""
    from wsss_ray.toyworld.world import HOME

    out = {}
    for name, (_, lower) in HOME.items():
        with_it = [s for s in samples if name in s.labels]
        out[name] = sum(s.stuff[1] == lower for s in with_it) / max(len(with_it), 1)
    return out


def timed(labeler, samples, batch: int = 32) -> tuple[list, float, float]:
    """(results, CAM seconds, CAM + CRF seconds) over `samples`."""
    images, labels = [s.image for s in samples], [list(s.labels) for s in samples]
    start = time.perf_counter()
    for i in range(0, len(samples), batch):
        labeler.cams(images[i:i + batch], labels[i:i + batch])
    cam_s = time.perf_counter() - start
    start = time.perf_counter()
    results = []
    for i in range(0, len(samples), batch):
        results += labeler.label(images[i:i + batch], labels[i:i + batch])
    return results, cam_s, time.perf_counter() - start


def localisation(samples, results) -> tuple[float, float, float]:
    """Means over (image, class) of: the share of the CAM's mass on the class's own pixels, the
    share of the image those pixels are (what an even CAM scores), and the CAM's AUC (the
    chance that an object pixel outscores a pixel off the object). Before background score and CRF.
    """
    from scipy.stats import rankdata

    from wsss_ray.toyworld import CLASSES

    mass, area, auc = [], [], []
    for s, r in zip(samples, results):
        for k, label in enumerate(s.labels):
            truth = (s.mask == CLASSES.index(label) + 1).ravel()
            cam = r.cams[k].ravel()
            mass.append(float((cam * truth).sum() / max(cam.sum(), 1e-9)))
            area.append(float(truth.mean()))
            pos, neg = int(truth.sum()), int((~truth).sum())
            if pos and neg:
                ranks = rankdata(cam)
                auc.append(float((ranks[truth].sum() - pos * (pos + 1) / 2) / (pos * neg)))
    return float(np.mean(mass)), float(np.mean(area)), float(np.mean(auc))


def grid(samples, rows: dict[str, list], min_confidence: float, zoom: int = 3) -> np.ndarray:
    """Per image a column: the image, its truth, then per method its first label's CAM and its pseudo-mask."""
    from wsss_ray.masks import colorize, ignore_below

    columns = []
    for j, s in enumerate(samples):
        cells = [s.image, colorize(s.mask)]
        for m in rows:
            r = rows[m][j]
            cells += [(np.repeat(r.cams[0][..., None], 3, -1) * 255).astype(np.uint8),
                      colorize(ignore_below(r.mask, r.confidence, min_confidence))]
        columns.append(np.concatenate(cells, axis=0))
    return np.concatenate(columns, axis=1).repeat(zoom, 0).repeat(zoom, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", help="SemPLeS prompts (the --output of jobs/learn_prompts.py); needed for semples")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--split", default="test", choices=["test", "val"])
    parser.add_argument("--offset", type=int, default=None,
                        help="first seed after the split's start (default: test 60,000, used by no default run or "
                             "sweep; val 0, the images the sweeps and settings were chosen on)")
    parser.add_argument("--config", action="append", default=[], metavar="METHOD=FILE",
                        help="settings YAML for one method (repeatable)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--grid", help="write the picture grid here (12 images)")
    parser.add_argument("--min-confidence", type=float, default=0.95,
                        help="in the grid, pseudo-mask pixels below this confidence are white (ignored); 0: argmax")
    args = parser.parse_args(argv)
    if "semples" in args.methods and not args.prompts:
        parser.error("semples needs --prompts (the --output of jobs/learn_prompts.py), or leave it out of --methods")

    from wsss_ray.metrics import accumulate, scores
    from wsss_ray.toyworld import CLASSES, SPLIT_SEEDS, render

    torch.set_num_threads(1)
    configs = dict(c.split("=", 1) for c in args.config)
    offset = args.offset if args.offset is not None else (60_000 if args.split == "test" else 0)
    samples = [render(SPLIT_SEEDS[args.split] + offset + i) for i in range(args.n)]
    share = home_share(samples)
    table, per_class, results = {}, {}, {}
    for method in args.methods:
        labeler = labeler_for(method, args.prompts, configs.get(method))
        res, cam_s, all_s = timed(labeler, samples)
        sc = scores(accumulate(((s.mask, r.mask) for s, r in zip(samples, res)), len(CLASSES) + 1))
        mass, area, auc = localisation(samples, res)
        table[method] = {"miou": round(sc.miou, 4), "cam_mass_on_object": round(mass, 3), "cam_auc": round(auc, 3),
                         "object_area": round(area, 3), "cam_images_per_s": round(args.n / cam_s, 1),
                         "images_per_s": round(args.n / all_s, 1), "config": configs.get(method)}
        per_class[method] = {c: round(float(sc.iou[i + 1]), 3) for i, c in enumerate(CLASSES)}
        results[method] = res[:12]
        print(json.dumps({method: table[method]}), flush=True)

    print(f"\n| {args.n} {args.split} images, toyclip | mIoU | CAM mass on its object (object area {area:.3f}) "
          f"| CAM AUC | CAM images/s | CAM+CRF images/s |\n|---|---|---|---|---|---|")
    for m, r in table.items():
        print(f"| {m} | {r['miou']:.4f} | {r['cam_mass_on_object']:.3f} | {r['cam_auc']:.3f} | {r['cam_images_per_s']} "
              f"| {r['images_per_s']} |")
    print("\n| class | home scene shown | " + " | ".join(args.methods) + " |\n|---|---|" + "---|" * len(args.methods))
    for c in sorted(CLASSES, key=lambda c: -share[c]):
        print(f"| {c} | {share[c]:.2f} | " + " | ".join(f"{per_class[m][c]:.3f}" for m in args.methods) + " |")
    if args.grid:
        from PIL import Image

        Image.fromarray(grid(samples[:12], results, args.min_confidence)).save(args.grid)
        print(f"\nwrote {args.grid}: rows image, truth, " + ", ".join(f"{m} CAM, {m} pseudo-mask"
                                                                       for m in args.methods))
    print(json.dumps({"table": table, "per_class": per_class, "home_share": share}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
