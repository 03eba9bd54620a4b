"""The measurements behind four CPU defaults, one table each, all in this run (one thread).

1. toyclip on the toy world's test split: float32 vs bf16 autocast, pydensecrf vs torch CRF
   (mIoU and ms per image): what the new defaults change for the bundled model.
2. ViT-B/16 (random weights, QuickGELU) at 500x375: images per model pass on a CPU
   (1, 4, 16), which ``CPU_TOKENS_PER_PASS`` chooses; and toyclip with all 32 images in one
   pass against the default.
3. The CRF at 64 px (the toy world's size, where the torch backend runs at full size).
4. The torch CRF's joint bilateral upsampling with 2x2 against 3x3 cells, on the real photos
   at their own size with the degraded masks of ``crf_defaults.py``.

    .venv/bin/python benchmarks/cpu_choices.py        # about 5 minutes
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import numpy as np
import torch

import wsss_ray.cam.base as base
import wsss_ray.lattice as lattice
from crf_defaults import blurred_probs, load_items
from wsss_ray.config import CrfConfig
from wsss_ray.crf import dense_crf
from wsss_ray.labeler import Labeler
from wsss_ray.labelset import IGNORE_INDEX
from wsss_ray.metrics import accumulate, scores
from wsss_ray.toyworld.evaluate import evaluate, split_samples

DATA = Path(__file__).resolve().parents[2] / "shared/data/real-sample"


def toyclip(samples) -> None:
    print(f"1. toyclip, {len(samples)} test images, batches of 32")
    print("| precision | CRF backend | mIoU | ms/img |\n|---|---|---|---|")
    for precision in ("fp32", "bf16"):
        for backend in ("pydensecrf", "torch"):
            labeler = Labeler.from_spec("toyclip", "toyworld", precision=precision,
                                        post={"crf": {"backend": backend}})
            start = time.perf_counter()
            miou = evaluate(labeler, samples).miou
            ms = (time.perf_counter() - start) / len(samples) * 1e3
            print(f"| {precision} | {backend} | {miou:.4f} | {ms:.1f} |", flush=True)


def passes(samples) -> None:
    from PIL import Image

    print("\n2. images per model pass on a CPU (the method's whole cams call)")
    print("| model | images per pass | s/img |\n|---|---|---|")
    torch.manual_seed(0)
    labeler = Labeler.from_spec("ViT-B-16-quickgelu", "voc")
    rng = np.random.default_rng(0)
    images = [np.asarray(Image.fromarray(rng.integers(0, 256, (94, 125, 3), dtype=np.uint8)).resize((500, 375)))
              for _ in range(16)]
    labels = [["cow"]] * 16
    labeler.cams(images[:1], labels[:1])
    for per_pass in (1, 4, 16):
        base.CPU_TOKENS_PER_PASS = 768 * per_pass
        start = time.perf_counter()
        labeler.cams(images, labels)
        print(f"| ViT-B/16, 500x375 | {per_pass} | {(time.perf_counter() - start) / 16:.3f} |", flush=True)
    toy = Labeler.from_spec("toyclip", "toyworld", post={"crf": {"iters": 0}})
    for name, tokens in (("all 32", 10**9), ("default", 1024)):
        base.CPU_TOKENS_PER_PASS = tokens
        start = time.perf_counter()
        evaluate(toy, samples)
        print(f"| toyclip (4 scales, CRF off) | {name} | {(time.perf_counter() - start) / len(samples):.4f} |",
              flush=True)
    base.CPU_TOKENS_PER_PASS = 1024


def small_crf(samples) -> None:
    rng = np.random.default_rng(0)
    probs = [rng.random((3, 64, 64)).astype(np.float32) for _ in samples]
    probs = [p / p.sum(0) for p in probs]
    print("\n3. the CRF at 64x64, 3 labels")
    print("| backend | ms/img |\n|---|---|")
    for backend in ("pydensecrf", "torch"):
        config = CrfConfig(backend=backend)
        dense_crf(samples[0].image, probs[0], config)
        start = time.perf_counter()
        for s, p in zip(samples, probs):
            dense_crf(s.image, p, config)
        print(f"| {backend} | {(time.perf_counter() - start) / len(samples) * 1e3:.1f} |", flush=True)


def upsampling_cells() -> None:
    items = load_items(DATA)
    prepared = [(image, np.where(mask == IGNORE_INDEX, -1, mask.astype(np.int64)), *blurred_probs(mask))
                for image, mask in items]
    print(f"\n4. joint bilateral upsampling cells, {len(items)} real photos at their own size")
    print("| cells | mIoU |\n|---|---|")
    ref = accumulate(((gt, c[dense_crf(i, p, CrfConfig(backend="pydensecrf")).argmax(0)])
                      for i, gt, c, p in prepared), 256)
    print(f"| pydensecrf (reference) | {scores(ref).miou:.4f} |")
    original = lattice.joint_bilateral_upsample
    for support in (3, 2):
        lattice.joint_bilateral_upsample = functools.partial(original, support=support)
        hist = accumulate(((gt, c[dense_crf(i, p).argmax(0)]) for i, gt, c, p in prepared), 256)
        print(f"| torch, {support}x{support} | {scores(hist).miou:.4f} |", flush=True)
    lattice.joint_bilateral_upsample = original


def main() -> None:
    torch.set_num_threads(1)
    samples = split_samples("test", 300)
    toyclip(samples)
    passes(samples[:96])
    small_crf(samples[:50])
    upsampling_cells()
    print(json.dumps({"torch": torch.__version__}))


if __name__ == "__main__":
    main()
