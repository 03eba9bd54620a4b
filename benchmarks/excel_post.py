"""What follows ExCEL's maps on the toy world: nothing, PAR, the dense CRF, or both.

ExCEL's authors end their training-free path with pixel-adaptive refinement (PAR) and no
CRF; the project ends every method with its dense CRF. This labels toy-world images with
toyclip and ``--method excel`` (toyclip's settings, then ``--config``, e.g. a sweep's
``best_config.yaml``) four ways and prints the mIoU and the time of each, so the default
post-processing is chosen by measurement:

    .venv/bin/python benchmarks/excel_post.py --config outputs/sweep-excel/best_config.yaml --split val --n 200

PAR iterations come from the settings (``excel.par_iters``, or 20 where they are 0); the
CRF is ``post.crf`` (its ``iters``, or 10 where they are 0). One thread.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def variants(config):
    """(name, settings) of the four ways, from a resolved labelling config."""
    import dataclasses

    method, post = config.method_config, config.post
    par = dataclasses.replace(method, par_iters=method.par_iters or 20)
    off = dataclasses.replace(method, par_iters=0)
    crf = dataclasses.replace(post, crf=dataclasses.replace(post.crf, iters=post.crf.iters or 10))
    none = dataclasses.replace(post, crf=dataclasses.replace(post.crf, iters=0))
    return [("neither", off, none), (f"PAR ({par.par_iters} iterations)", par, none),
            (f"dense CRF ({crf.crf.iters} iterations)", off, crf), ("PAR, then the dense CRF", par, crf)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="settings YAML over toyclip's own (e.g. the sweep's best_config.yaml)")
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--offset", type=int, default=0, help="first seed of the split to use")
    args = parser.parse_args()

    from wsss_ray.cam.excel import Excel
    from wsss_ray.clip import load_clip
    from wsss_ray.config import resolve_label_job
    from wsss_ray.labeler import Labeler
    from wsss_ray.labelset import load_labelset
    from wsss_ray.toyworld import SPLIT_SEEDS, render
    from wsss_ray.toyworld.evaluate import evaluate

    torch.set_num_threads(1)
    config = resolve_label_job({"model": "toyclip", "labelset": "toyworld", "method": "excel"}, args.config)
    samples = [render(SPLIT_SEEDS[args.split] + args.offset + i) for i in range(args.n)]
    clip, labelset = load_clip(config.model), load_labelset(config.labelset)
    rows = {}
    print(f"| {args.n} toy {args.split} images, toyclip, `--method excel` | mIoU | s/image (one thread) |\n|---|---|---|")
    for name, method, post in variants(config):
        labeler = Labeler(Excel(method, clip, labelset), post, config.precision, config.tagger)
        start = time.perf_counter()
        miou = evaluate(labeler, samples).miou
        rows[name] = {"miou": round(miou, 4), "seconds_per_image": round((time.perf_counter() - start) / args.n, 4)}
        print(f"| {name} | {miou:.4f} | {rows[name]['seconds_per_image']:.4f} |", flush=True)
    print(json.dumps({"split": args.split, "n": args.n, "config": args.config, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
