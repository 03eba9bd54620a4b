"""What makes CLIP-ES CAMs fast on a CPU: seconds per image for ViT-B/16 at VOC size, one knob at a time.

A randomly initialised ViT-B/16 with QuickGELU (speed does not depend on the weights),
CLIP-ES's ViT-B/16 defaults (one scale, CAA), images 500x375 (model input 384x512),
two classes each; the method's whole ``cams`` call (resize, CAMs, CAA, upsampling).
Every row is measured in this run, best of `--repeats`, after one warm-up call; the
CAM difference is against the float32 per-class loop's CAMs of the same images.

    .venv/bin/python benchmarks/cam_cpu.py [--images 4] [--repeats 2] [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch

from wsss_ray.cam import ClipES
from wsss_ray.cam.clip_es import ClipESReferenceOrder
from wsss_ray.clip import load_clip
from wsss_ray.config import ClipESConfig
from wsss_ray.labelset import load_labelset


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the image tower")
    args = parser.parse_args()
    torch.manual_seed(0)
    clip = load_clip("ViT-B-16-quickgelu")
    labelset = load_labelset("voc")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (375, 500, 3), dtype=np.uint8) for _ in range(args.images)]
    ids = [[int(a), int(b)] for a, b in rng.choice(len(labelset), (args.images, 2))]
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
    print(f"{args.images} images 500x375, 2 classes each; s/img = best of {args.repeats}")
    print("| setting | s/img | vs reference order | max CAM difference | mean CAM difference |")
    print("|---|---|---|---|---|")
    base, ref = None, None
    for name, method, batch, autocast, threads in rows:
        torch.set_num_threads(threads)
        seconds, cams = timed(method, images, ids, batch, autocast, args.repeats)
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
                for _ in range(args.repeats):
                    clip.model.visual.transformer(clip.model.visual.ln_pre(torch.randn(1, 769, 768)))
            print(f"12 blocks, bf16, 1 thread, {name}: {(time.perf_counter() - start) / args.repeats:.3f} s")
        clip.model.visual.to(memory_format=torch.channels_last)
        start = time.perf_counter()
        for _ in range(args.repeats):
            clip.model.visual.conv1(x.to(memory_format=torch.channels_last))
        cl = (time.perf_counter() - start) / args.repeats
        clip.model.visual.to(memory_format=torch.contiguous_format)
        start = time.perf_counter()
        for _ in range(args.repeats):
            clip.model.visual.conv1(x)
        print(f"patch embedding (the only convolution): channels-last {cl * 1e3:.1f} ms, "
              f"contiguous {(time.perf_counter() - start) / args.repeats * 1e3:.1f} ms")
    if args.compile:
        blocks = clip.model.visual.transformer.resblocks
        start = time.perf_counter()
        for i in range(len(blocks) - 1):
            blocks[i] = torch.compile(blocks[i])
        seconds, _ = timed(one, images[:1], ids[:1], 1, bf16, 1)
        print(f"torch.compile of blocks 0..10: first call (compiling) {time.perf_counter() - start:.1f} s")
        seconds, _ = timed(one, images, ids, 1, bf16, args.repeats)
        print(f"| one forward, bf16, 1 thread, blocks compiled | {seconds:.3f} | {base / seconds:.2f}x | | |")


if __name__ == "__main__":
    main()
