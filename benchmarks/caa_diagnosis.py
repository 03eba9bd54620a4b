"""Why CAA does not help a tiny CLIP: how much attention stays on the object?

For val-split images, the share of attention that object patches give to object
patches, divided by the object's share of the image (1.0 = no preference), per
block; then the same ratio for CLIP-ES's affinity (last 2/3 of the blocks,
Sinkhorn x3, symmetrised, squared); then val mIoU of CAMs with CAA at power 1 and 2
and without CAA.

    .venv/bin/python benchmarks/caa_diagnosis.py [--model toyclip] [--n 40]
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from wsss_ray.cam import ClipES
from wsss_ray.cam.caa import affinity
from wsss_ray.cam.gradcam import encode, to_model_input
from wsss_ray.clip import load_clip
from wsss_ray.config import ClipESConfig, CrfConfig, PostConfig
from wsss_ray.labeler import Labeler
from wsss_ray.labelset import load_labelset
from wsss_ray.toyworld.evaluate import evaluate, split_samples


def object_patches(mask: np.ndarray, patch: int) -> torch.Tensor:
    """Bool over patches: more than half of the patch is object."""
    m = torch.from_numpy((mask > 0).astype(np.float32))[None, None]
    return F.avg_pool2d(m, patch).flatten() > 0.5


def ratio(a: torch.Tensor, obj: torch.Tensor) -> float:
    return float(a[obj][:, obj].sum(1).mean() / a[obj].sum(1).mean()) / float(obj.float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toyclip")
    parser.add_argument("--n", type=int, default=40)
    args = parser.parse_args()
    clip = load_clip(args.model)
    samples = split_samples("val", args.n)
    blocks = len(clip.model.visual.transformer.resblocks)
    x = torch.stack([to_model_input(s.image, s.image.shape[:2], clip.mean, clip.std) for s in samples])
    enc = encode(clip.model, x, blocks)
    objs = [object_patches(s.mask, clip.patch_size) for s in samples]
    keep = [i for i, o in enumerate(objs) if 0 < o.sum() < len(o)]
    for layer, a in enumerate(enc.attention):
        print(f"block {layer}: attention object->object / chance = "
              f"{np.mean([ratio(a[i, 1:, 1:], objs[i]) for i in keep]):.2f}")
    last = math.ceil(blocks * 2 / 3)
    aff = [ratio(affinity([a[i] for a in enc.attention[-last:]]), objs[i]) for i in keep]
    print(f"CLIP-ES affinity (last {last} blocks, Sinkhorn x3, symmetrised, squared) / chance = {np.mean(aff):.2f}")
    labelset, val = load_labelset("toyworld"), split_samples("val", 150)
    post = PostConfig(crf=CrfConfig(iters=0))  # CAMs only: no CRF (masks are the full argmax)
    base = ClipESConfig()
    for name, cfg in (("no CAA", dataclasses.replace(base, caa=False)),
                      ("CAA, power 1", dataclasses.replace(base, affinity_power=1)),
                      ("CAA, power 2 (CLIP-ES)", base)):
        labeler = Labeler(ClipES(cfg, clip, labelset), post)
        print(f"val mIoU (150 images, one scale, no CRF), {name}: {evaluate(labeler, val).miou:.3f}")


if __name__ == "__main__":
    main()
