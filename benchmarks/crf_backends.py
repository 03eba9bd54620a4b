"""The two dense-CRF backends side by side: quality (mIoU) and seconds per image.

Same kernel settings (CrfConfig's defaults, the CLIP-ES reference kernel) for every row.

- Real photos (../shared/data/real-sample, 41 MSRC + 3 VOC, with pixel ground truth):
  the CAM-like degraded masks of ``wsss_ray.testing.degraded`` (ground truth shrunk to a
  1/32 grid, upsampled, blurred, softened) as CRF input, at the photos' own size and
  upscaled to 500x375 (VOC size). mIoU over one confusion matrix, void ignored, and the
  share of pixels whose label equals pydensecrf's.
- Toy world: toyclip's CAMs (its own label settings, float32) on the test split, at the
  default 64 px and at 256 px, scored against the exact masks.
- Seconds per image at 500x375, one thread (and on the GPU when there is one), and what
  that means for a GPU: CPU cores = (GPU CAM images/s) x (CRF seconds per image per core).

With ``--kernels`` it prints instead the table that chose the default kernel: the
degraded masks' mIoU before the CRF and after it with each of ten kernel settings
(the CLIP-ES reference kernel, the previous light default and others), on one backend.

    .venv/bin/python benchmarks/crf_backends.py [--toy-n 500] [--gpu-cams-per-s 154.8]   # about 15 minutes
    .venv/bin/python benchmarks/crf_backends.py --kernels [--backend pydensecrf]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wsss_ray.config import CrfConfig, resolve_label_job
from wsss_ray.crf import dense_crf
from wsss_ray.labeler import Labeler
from wsss_ray.labelset import IGNORE_INDEX
from wsss_ray.metrics import accumulate, scores
from wsss_ray.testing.degraded import blurred_probs, load_items
from wsss_ray.toyworld.evaluate import split_samples

BACKENDS = {
    "pydensecrf (reference)": CrfConfig(backend="pydensecrf"),
    "torch, default (grid up to 4x coarser)": CrfConfig(backend="torch"),
    "torch, full resolution (downsample 1)": CrfConfig(backend="torch", downsample=1),
}
REFERENCE = "pydensecrf (reference)"

# Kernel candidates (--kernels): written out in full so the table does not change when the default does.
CANDIDATES = {
    "clip-es / deeplab reference, current default (1,3 | 67,3,4)": CrfConfig(iters=10, gauss_sxy=1, gauss_compat=3, bilateral_sxy=67, bilateral_srgb=3, bilateral_compat=4),
    "pydensecrf example (3,3 | 80,13,10)": CrfConfig(gauss_sxy=3, gauss_compat=3, bilateral_sxy=80, bilateral_srgb=13, bilateral_compat=10),
    "semples voc (4,3 | 83,5,3)": CrfConfig(gauss_sxy=4, gauss_compat=3, bilateral_sxy=83, bilateral_srgb=5, bilateral_compat=3),
    "(3,3 | 50,5,4)": CrfConfig(gauss_sxy=3, gauss_compat=3, bilateral_sxy=50, bilateral_srgb=5, bilateral_compat=4),
    "(3,3 | 50,10,5)": CrfConfig(gauss_sxy=3, gauss_compat=3, bilateral_sxy=50, bilateral_srgb=10, bilateral_compat=5),
    "(3,3 | 30,10,8)": CrfConfig(gauss_sxy=3, gauss_compat=3, bilateral_sxy=30, bilateral_srgb=10, bilateral_compat=8),
    "(3,3 | 80,8,6)": CrfConfig(gauss_sxy=3, gauss_compat=3, bilateral_sxy=80, bilateral_srgb=8, bilateral_compat=6),
    "previous library default, light (1,1 | 20,10,1)": CrfConfig(iters=10, gauss_sxy=1, gauss_compat=1, bilateral_sxy=20, bilateral_srgb=10, bilateral_compat=1),
    "(3,1 | 15,8,1)": CrfConfig(gauss_sxy=3, gauss_compat=1, bilateral_sxy=15, bilateral_srgb=8, bilateral_compat=1),
    "(1,1 | 50,5,2)": CrfConfig(gauss_sxy=1, gauss_compat=1, bilateral_sxy=50, bilateral_srgb=5, bilateral_compat=2),
}


def voc_size(items):
    return [(np.asarray(Image.fromarray(i).resize((500, 375), Image.BICUBIC)),
             np.asarray(Image.fromarray(m).resize((500, 375), Image.NEAREST))) for i, m in items]


def real_photos(items, title: str, device: str = "cpu") -> dict[str, float]:
    """Prints one table; returns seconds per image per backend."""
    prepared = [(image, np.where(mask == IGNORE_INDEX, -1, mask.astype(np.int64)), *blurred_probs(mask))
                for image, mask in items]
    labels, seconds = {}, {}
    for name, config in BACKENDS.items():
        start = time.perf_counter()
        labels[name] = [dense_crf(image, probs, config, device).argmax(0) for image, _, _, probs in prepared]
        seconds[name] = (time.perf_counter() - start) / len(prepared)
    print(f"\n{title}: {len(items)} photos, input mIoU "
          f"{scores(accumulate(((gt, c[p.argmax(0)]) for _, gt, c, p in prepared), 256)).miou:.4f}")
    print("| backend | mIoU | vs pydensecrf, points | pixels labelled as pydensecrf | s/img (1 thread) |")
    print("|---|---|---|---|---|")
    ref_miou = None
    for name, outs in labels.items():
        miou = scores(accumulate(((gt, c[o]) for (_, gt, c, _), o in zip(prepared, outs)), 256)).miou
        ref_miou = miou if ref_miou is None else ref_miou
        agree = np.mean([(o == r).mean() for o, r in zip(outs, labels[REFERENCE])])
        print(f"| {name} | {miou:.4f} | {100 * (miou - ref_miou):+.2f} | {100 * agree:.2f} % | {seconds[name]:.3f} |")
    return seconds


def toy_world(n: int, size: int) -> None:
    config = resolve_label_job({"model": "toyclip", "precision": "fp32"})
    labeler = Labeler.from_config(config)
    samples = split_samples("test", n, size=size)
    cams = []
    for i in range(0, n, 32):
        batch = samples[i:i + 32]
        cams += labeler.cams([s.image for s in batch], [list(s.labels) for s in batch])
    ids = [labeler.class_ids(list(s.labels)) for s in samples]
    print(f"\ntoy world, test split, {n} images at {size} px (toyclip CAMs, its label settings)")
    print("| backend | mIoU | vs pydensecrf, points |")
    print("|---|---|---|")
    ref = None
    for name, crf in BACKENDS.items():
        post = dataclasses.replace(labeler.post, crf=dataclasses.replace(
            labeler.post.crf, backend=crf.backend, downsample=crf.downsample))
        masks = ((s.mask, np.array([0, *(k + 1 for k in i)])[dense_crf(s.image, p, post.crf).argmax(0)])
                 for s, i, p in zip(samples, ids, (labeler.probs([c])[0] for c in cams)))
        miou = scores(accumulate(masks, len(labeler.labelset) + 1)).miou
        ref = miou if ref is None else ref
        print(f"| {name} | {miou:.4f} | {100 * (miou - ref):+.2f} |")


def kernel_table(items, backend: str) -> None:
    """Which kernel settings snap the degraded masks back to the true edges best (the choice of
    CrfConfig's default): mIoU of the input and of the CRF output per candidate."""
    n = 256
    # Ground truth with ignore (255) as -1: outside [0, n), so the confusion matrix skips it.
    prepared = [(image, np.where(mask == IGNORE_INDEX, -1, mask.astype(np.int64)), *blurred_probs(mask))
                for image, mask in items]
    hist_in = accumulate(((gt, classes[probs.argmax(0)]) for _, gt, classes, probs in prepared), n)
    hists = {name: accumulate(((gt, classes[dense_crf(image, probs, dataclasses.replace(cfg, backend=backend)).argmax(0)])
                               for image, gt, classes, probs in prepared), n)
             for name, cfg in CANDIDATES.items()}
    print(f"{len(items)} photos; mIoU over the classes present")
    print("| setting (gauss sxy,compat / bilateral sxy,srgb,compat) | mIoU |")
    print("|---|---|")
    print(f"| blurred ground truth, no CRF | {scores(hist_in).miou:.3f} |")
    for name, hist in sorted(hists.items(), key=lambda kv: -scores(kv[1]).miou):
        print(f"| {name} | {scores(hist).miou:.3f} |")
    print(f"current default: {CrfConfig()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/real-sample"))
    parser.add_argument("--toy-n", type=int, default=500, help="toy-world images at 64 px (0: skip the toy world)")
    parser.add_argument("--gpu-cams-per-s", type=float, default=154.8,
                        help="one GPU's CLIP-ES images/s at VOC size (default: the H200 fp32 figure in RESULTS)")
    parser.add_argument("--kernels", action="store_true", help="print the kernel candidates' table instead")
    parser.add_argument("--backend", default="pydensecrf", choices=("pydensecrf", "torch"),
                        help="--kernels: the CRF backend (default: pydensecrf, the reference the table was measured with)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    items = load_items(Path(args.data))
    if args.kernels:
        kernel_table(items, args.backend)
        return
    real_photos(items, "real photos at their own size")
    seconds = real_photos(voc_size(items), "real photos upscaled to 500x375")
    print(f"\nCPU cores one GPU's CAM output ({args.gpu_cams_per_s:g} images/s) needs at 500x375:")
    for name, s in seconds.items():
        print(f"- {name}: {s:.3f} s/img per core -> {args.gpu_cams_per_s * s:.0f} cores")
    if torch.cuda.is_available():
        real_photos(voc_size(items), f"on {torch.cuda.get_device_name()}, 500x375", device="cuda")
    if args.toy_n:
        toy_world(args.toy_n, 64)
        toy_world(max(50, args.toy_n // 5), 256)


if __name__ == "__main__":
    main()
