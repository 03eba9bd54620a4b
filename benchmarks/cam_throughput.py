"""Images/s of CLIP-ES softmax-GradCAM: the reference's per-class loop vs one forward per image.

Same model, same images, same text features, one run. The loop is how the
reference implementation works (per image: blocks 0..L-2 once, then one
last-block forward + backward per present class); ``softmax_gradcam`` encodes
the whole batch once, runs the last block forward once per image and takes each
class's gradient by a vector-Jacobian product through that graph. CAMs are
checked equal before timing.

    .venv/bin/python benchmarks/cam_throughput.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import open_clip
import torch

from wsss_ray.cam.gradcam import encode, gradcam_loop, softmax_gradcam, to_model_input
from wsss_ray.cam.prompts import text_features
from wsss_ray.clip import load_clip
from wsss_ray.labelset import load_labelset
from wsss_ray.toyworld.evaluate import split_samples


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch threads: {args.threads}; best of {args.repeats}")
    print("| model | batch | loop images/s | one forward images/s | speed-up | max CAM difference |")
    print("|---|---|---|---|---|---|")

    labelset = load_labelset("toyworld")
    clip = load_clip("toyclip")
    samples = split_samples("test", 32)
    x = torch.stack([to_model_input(s.image, (64, 64), clip.mean, clip.std) for s in samples])
    tf = text_features(clip.model, clip.tokenizer, labelset)
    rows = [tf.for_image([labelset.index(l) for l in s.labels]) for s in samples]
    bench("toyclip, 64 px", clip.model, x, rows, args.repeats)

    model = open_clip.create_model("ViT-B-16").eval()  # random init: speed does not depend on weights
    tok = open_clip.get_tokenizer("ViT-B-16")
    voc = load_labelset("voc")
    tf = text_features(model, tok, voc)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 448, 448, 3), dtype=np.uint8)
    x = torch.stack([to_model_input(im, (448, 448), open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
                     for im in images])
    rows = [tf.for_image(sorted(rng.choice(20, size=k, replace=False).tolist())) for k in (1, 2, 3, 2)]
    bench("ViT-B-16 (random init), 448 px", model, x, rows, args.repeats)


if __name__ == "__main__":
    main()
