"""The measurements behind the CPU defaults, one table each, all in this run (one thread unless said).

1. toyclip on the toy world's test split: float32 vs bf16 autocast, pydensecrf vs torch CRF
   (mIoU and ms per image): what the new defaults change for the bundled model.
2. ViT-B/16 (random weights, QuickGELU) at 500x375: images per model pass on a CPU
   (1, 4, 16), which ``CPU_TOKENS_PER_PASS`` chooses; and toyclip with all 32 images in one
   pass against the default.
3. The CRF at 64 px (the toy world's size, where the torch backend runs at full size).
4. The torch CRF's joint bilateral upsampling with 2x2 against 3x3 cells, on the real photos
   at their own size with the degraded masks of ``wsss_ray.testing.degraded``.
knobs. What makes CLIP-ES CAMs fast on a CPU: seconds per image for ViT-B/16 (random weights,
   QuickGELU) at 500x375 (model input 384x512), CLIP-ES's defaults, two classes per image, the
   method's whole ``cams`` call, one knob at a time (reference order, one forward, bf16 autocast,
   images per call, threads), each against the float32 per-class loop's CAMs; then no_grad
   against inference_mode, channels-last, and with ``--compile`` torch.compile of the blocks.
loop. softmax-GradCAM alone: the reference's per-class loop (per image: blocks 0..L-2 once,
   then one last-block forward + backward per present class) against one last-block forward
   per image with each class's gradient a vector-Jacobian product, toyclip and ViT-B/16 (random
   init) at 448 px, CAMs checked equal before timing; on all of the process's threads.

    .venv/bin/python benchmarks/cpu_choices.py                            # tables 1-4, about 5 minutes
    .venv/bin/python benchmarks/cpu_choices.py --tables knobs             # about 4 minutes
    .venv/bin/python benchmarks/cpu_choices.py --tables loop --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import time
from pathlib import Path

import numpy as np
import open_clip
import torch

import wsss_ray.cam.base as base
import wsss_ray.lattice as lattice
from wsss_ray.cam import ClipES
from wsss_ray.cam.clip_es import ClipESReferenceOrder
from wsss_ray.cam.gradcam import encode, gradcam_loop, softmax_gradcam, to_model_input
from wsss_ray.cam.prompts import text_features
from wsss_ray.clip import load_clip
from wsss_ray.config import ClipESConfig, CrfConfig
from wsss_ray.crf import dense_crf
from wsss_ray.labeler import Labeler
from wsss_ray.labelset import IGNORE_INDEX, load_labelset
from wsss_ray.metrics import accumulate, scores
from wsss_ray.testing.degraded import blurred_probs, load_items
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


def timed(method, images, ids, batch: int, autocast, repeats: int) -> tuple[float, list[np.ndarray]]:
    def once():
        out = []
        with autocast():
            for i in range(0, len(images), batch):
                out += method.cams(images[i:i + batch], ids[i:i + batch])
        return out

    once()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        cams = once()
        best = min(best, time.perf_counter() - start)
    return best / len(images), cams


def cam_knobs(n_images: int, repeats: int, compile_: bool) -> None:
    """What makes CLIP-ES CAMs fast on a CPU: ViT-B/16 at VOC size, one knob at a time."""
    torch.manual_seed(0)
    clip = load_clip("ViT-B-16-quickgelu")
    labelset = load_labelset("voc")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (375, 500, 3), dtype=np.uint8) for _ in range(n_images)]
    ids = [[int(a), int(b)] for a, b in rng.choice(len(labelset), (n_images, 2))]
    ids = [i if i[0] != i[1] else [i[0], (i[0] + 1) % len(labelset)] for i in ids]
    fp32, bf16 = contextlib.nullcontext, lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    loop, one = ClipESReferenceOrder(ClipESConfig(), clip, labelset), ClipES(ClipESConfig(), clip, labelset)

    rows = [("per-class loop (reference order), float32, 1 thread", loop, 1, fp32, 1),
            ("one forward per image, float32, 1 thread", one, 1, fp32, 1),
            ("one forward, bf16 autocast, 1 thread", one, 1, bf16, 1),
            ("one forward, bf16, 1 thread, batch 2", one, 2, bf16, 1),
            ("one forward, bf16, 1 thread, batch 4", one, 4, bf16, 1),
            ("one forward, float32, 2 threads", one, 1, fp32, 2),
            ("one forward, bf16, 2 threads", one, 1, bf16, 2)]
    print(f"\nknobs. {n_images} images 500x375, 2 classes each; s/img = best of {repeats}")
    print("| setting | s/img | vs reference order | max CAM difference | mean CAM difference |")
    print("|---|---|---|---|---|")
    base, ref = None, None
    for name, method, batch, autocast, threads in rows:
        torch.set_num_threads(threads)
        seconds, cams = timed(method, images, ids, batch, autocast, repeats)
        base, ref = (seconds, cams) if base is None else (base, ref)
        diff = [np.abs(a - b) for a, b in zip(cams, ref)]
        print(f"| {name} | {seconds:.3f} | {base / seconds:.2f}x | {max(d.max() for d in diff):.1e} | "
              f"{np.mean([d.mean() for d in diff]):.1e} |", flush=True)

    torch.set_num_threads(1)
    with torch.no_grad():
        x = torch.randn(1, 3, 384, 512)
        for name, ctx in (("no_grad", torch.no_grad), ("inference_mode", torch.inference_mode)):
            with ctx(), bf16():
                clip.model.visual.transformer(clip.model.visual.ln_pre(torch.randn(1, 769, 768)))
                start = time.perf_counter()
                for _ in range(repeats):
                    clip.model.visual.transformer(clip.model.visual.ln_pre(torch.randn(1, 769, 768)))
            print(f"12 blocks, bf16, 1 thread, {name}: {(time.perf_counter() - start) / repeats:.3f} s")
        clip.model.visual.to(memory_format=torch.channels_last)
        start = time.perf_counter()
        for _ in range(repeats):
            clip.model.visual.conv1(x.to(memory_format=torch.channels_last))
        cl = (time.perf_counter() - start) / repeats
        clip.model.visual.to(memory_format=torch.contiguous_format)
        start = time.perf_counter()
        for _ in range(repeats):
            clip.model.visual.conv1(x)
        print(f"patch embedding (the only convolution): channels-last {cl * 1e3:.1f} ms, "
              f"contiguous {(time.perf_counter() - start) / repeats * 1e3:.1f} ms")
    if compile_:
        blocks = clip.model.visual.transformer.resblocks
        start = time.perf_counter()
        for i in range(len(blocks) - 1):
            blocks[i] = torch.compile(blocks[i])
        seconds, _ = timed(one, images[:1], ids[:1], 1, bf16, 1)
        print(f"torch.compile of blocks 0..10: first call (compiling) {time.perf_counter() - start:.1f} s")
        seconds, _ = timed(one, images, ids, 1, bf16, repeats)
        print(f"| one forward, bf16, 1 thread, blocks compiled | {seconds:.3f} | {base / seconds:.2f}x | | |")


def reference_loop(model, x, rows):
    """Per image: encode, then one last-block pass per class (the reference's order)."""
    out = []
    for b in range(x.shape[0]):
        enc = encode(model, x[b:b + 1])
        out += gradcam_loop(model, enc, [rows[b][0]], [rows[b][1]])
    return out


def one_forward(model, x, rows):
    enc = encode(model, x)
    return softmax_gradcam(model, enc, [r for r, _ in rows], [t for _, t in rows])


def bench(name, model, x, rows, repeats):
    ref, new = reference_loop(model, x, rows), one_forward(model, x, rows)
    err = max(float((a - b).abs().max()) for a, b in zip(ref, new))
    times = {}
    for label, fn in (("per-class loop", reference_loop), ("one forward", one_forward)):
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            fn(model, x, rows)
            best = min(best, time.perf_counter() - t)
        times[label] = x.shape[0] / best
    pairs = sum(len(t) for _, t in rows)
    print(f"| {name} | {x.shape[0]} images, {pairs} classes | {times['per-class loop']:.1f} | "
          f"{times['one forward']:.1f} | {times['one forward'] / times['per-class loop']:.2f}x | {err:.1e} |", flush=True)


def cam_loop(repeats: int) -> None:
    """softmax-GradCAM: the reference's per-class loop against one forward per image (CAMs checked equal)."""
    torch.manual_seed(0)
    print(f"\nloop. softmax-GradCAM, torch threads: {torch.get_num_threads()}; best of {repeats}")
    print("| model | batch | loop images/s | one forward images/s | speed-up | max CAM difference |")
    print("|---|---|---|---|---|---|")

    labelset = load_labelset("toyworld")
    clip = load_clip("toyclip")
    samples = split_samples("test", 32)
    x = torch.stack([to_model_input(s.image, (64, 64), clip.mean, clip.std) for s in samples])
    tf = text_features(clip.model, clip.tokenizer, labelset)
    rows = [tf.for_image([labelset.index(l) for l in s.labels]) for s in samples]
    bench("toyclip, 64 px", clip.model, x, rows, repeats)

    model = open_clip.create_model("ViT-B-16").eval()  # random init: speed does not depend on weights
    tok = open_clip.get_tokenizer("ViT-B-16")
    voc = load_labelset("voc")
    tf = text_features(model, tok, voc)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 448, 448, 3), dtype=np.uint8)
    x = torch.stack([to_model_input(im, (448, 448), open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
                     for im in images])
    rows = [tf.for_image(sorted(rng.choice(20, size=k, replace=False).tolist())) for k in (1, 2, 3, 2)]
    bench("ViT-B-16 (random init), 448 px", model, x, rows, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", default=["1", "2", "3", "4"],
                        choices=["1", "2", "3", "4", "knobs", "loop"])
    parser.add_argument("--repeats", type=int, default=2, help="knobs, loop: best of this many runs")
    parser.add_argument("--images", type=int, default=4, help="knobs: images at 500x375")
    parser.add_argument("--compile", action="store_true", help="knobs: also time torch.compile of the image tower")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    samples = split_samples("test", 300)
    if "1" in args.tables:
        toyclip(samples)
    if "2" in args.tables:
        passes(samples[:96])
    if "3" in args.tables:
        small_crf(samples[:50])
    if "4" in args.tables:
        upsampling_cells()
    if "knobs" in args.tables:
        cam_knobs(args.images, args.repeats, args.compile)
    if "loop" in args.tables:
        torch.set_num_threads(threads)
        cam_loop(args.repeats)
    print(json.dumps({"torch": torch.__version__}))


if __name__ == "__main__":
    main()
