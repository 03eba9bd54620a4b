"""Which pixels the dense CRF calls confident (>= 0.95), per backend, against pydensecrf and the truth.

The masks CLIP-ES trains on are the CRF's argmax with its 0.95 confidence threshold
(pixels below it are 255), so a backend must agree with the reference on that set,
not only on the argmax. On the 44 sample photos (41 MSRC + 3 VOC, pixel ground truth)
upscaled to 500x375 (VOC size), with the CAM-like masks of ``wsss_ray.testing.degraded``
as input and CrfConfig's kernel (the CLIP-ES reference's), for each backend setting:

- thresholded masks (argmax, 255 below 0.95; 255 counts as a value) equal to
  pydensecrf's, median and lowest photo;
- the argmax equal to pydensecrf's (median);
- precision of the >= 0.95 pixels against the ground truth (share of them labelled right)
  and their coverage (share of the non-void pixels that are confident), over all photos;
- seconds per image on one thread.

    .venv/bin/python benchmarks/crf_confidence.py [--data ../shared/data/real-sample] [--threshold 0.95]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from wsss_ray.config import CrfConfig
from wsss_ray.crf import dense_crf
from wsss_ray.labelset import IGNORE_INDEX
from wsss_ray.testing.degraded import blurred_probs, load_items

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "pydensecrf (the reference; `auto` on a CPU, the default)"


def settings(extra: list[str]) -> dict[str, CrfConfig]:
    rows = {
        REFERENCE: CrfConfig(backend="pydensecrf"),
        "torch, grid up to 4x coarser (default before)": CrfConfig(backend="torch", downsample=4),
        "torch, grid up to 2x coarser": CrfConfig(backend="torch", downsample=2),
        "torch, full resolution (`auto` on a GPU)": CrfConfig(backend="torch", downsample=1),
    }
    for spec in extra:  # name=field:value,field:value
        name, _, fields = spec.partition("=")
        changes = {k: type(getattr(CrfConfig(), k))(v) for k, v in (f.split(":") for f in fields.split(","))}
        rows[name] = dataclasses.replace(CrfConfig(), **changes)
    return rows


def thresholded(marginals: np.ndarray, classes: np.ndarray, threshold: float) -> np.ndarray:
    """Labels (the class values) with IGNORE_INDEX where the max marginal is below `threshold`."""
    labels = classes[marginals.argmax(0)].astype(np.int64)
    labels[marginals.max(0) < threshold] = IGNORE_INDEX
    return labels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "real-sample"))
    p.add_argument("--threshold", type=float, default=0.95)
    p.add_argument("--size", default="500x375", help="WxH the photos are upscaled to ('own': as they are)")
    p.add_argument("--setting", action="append", default=[], metavar="NAME=FIELD:VALUE,...",
                   help="another CrfConfig to measure, e.g. 'torch 3x=backend:torch,downsample:3'")
    a = p.parse_args(argv)
    torch.set_num_threads(1)

    from PIL import Image

    items = load_items(Path(a.data))
    if a.size != "own":
        w, h = (int(v) for v in a.size.split("x"))
        items = [(np.asarray(Image.fromarray(i).resize((w, h), Image.BICUBIC)),
                  np.asarray(Image.fromarray(m).resize((w, h), Image.NEAREST))) for i, m in items]
    prepared = [(image, mask, *blurred_probs(mask)) for image, mask in items]
    rows = settings(a.setting)
    out: dict[str, dict] = {}
    for name, config in rows.items():
        start = time.perf_counter()
        marginals = [dense_crf(image, probs, config) for image, _, _, probs in prepared]
        seconds = (time.perf_counter() - start) / len(prepared)
        out[name] = {"marginals": marginals, "seconds": seconds}
    print(f"\n{len(items)} photos at {a.size}, CAM-like input, threshold {a.threshold}, one thread\n")
    print("| backend | thresholded masks = pydensecrf's (median / lowest) | argmax = pydensecrf's (median) "
          "| >= threshold: precision | coverage | s/img |\n|---|---|---|---|---|---|")
    ref = out[REFERENCE]["marginals"]
    for name, r in out.items():
        same_t, same_a, right, confident, known = [], [], 0, 0, 0
        for (image, mask, classes, _), m, m_ref in zip(prepared, r["marginals"], ref):
            t, t_ref = thresholded(m, classes, a.threshold), thresholded(m_ref, classes, a.threshold)
            same_t.append(float((t == t_ref).mean()))
            same_a.append(float((m.argmax(0) == m_ref.argmax(0)).mean()))
            valid = mask != IGNORE_INDEX
            sure = valid & (t != IGNORE_INDEX)
            right += int((t[sure] == mask[sure]).sum())
            confident += int(sure.sum())
            known += int(valid.sum())
        print(f"| {name} | {100 * np.median(same_t):.2f} % / {100 * min(same_t):.2f} % | "
              f"{100 * np.median(same_a):.2f} % | {right / max(confident, 1):.4f} | {confident / known:.4f} | "
              f"{r['seconds']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
