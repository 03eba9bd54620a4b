"""Toy-world CLI.

    python -m wsss_ray.toyworld generate --out DIR --n N [--seed S | --split train|val|test] [--size PX]
    python -m wsss_ray.toyworld train-clip --out DIR [--minutes M] [--steps N]
    python -m wsss_ray.toyworld demo [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys

from wsss_ray.toyworld import SPLIT_SEEDS, generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wsss_ray.toyworld", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write a collection with exact masks")
    gen.add_argument("--out", required=True, help="output folder")
    gen.add_argument("--n", type=int, required=True, help="number of images")
    seed = gen.add_mutually_exclusive_group()
    seed.add_argument("--seed", type=int, help="seed of the first image (image i has seed S+i)")
    seed.add_argument("--split", choices=sorted(SPLIT_SEEDS), help="start at the split's first seed")
    gen.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")

    tr = sub.add_parser("train-clip", help="train the tiny CLIP on toy-world captions")
    tr.add_argument("--out", required=True, help="output folder (resumes if it holds train_state.pt)")
    tr.add_argument("--minutes", type=float, default=None, help="wall-clock budget")
    tr.add_argument("--steps", type=int, default=None, help="number of optimiser steps")
    tr.add_argument("--seed", type=int, default=0)

    demo = sub.add_parser("demo", help="render a sample grid and report the bundled toyclip's zero-shot mAP")
    demo.add_argument("--out", default="outputs/toyworld-demo", help="where to write the grid")
    demo.add_argument("--n", type=int, default=200, help="test images to score")

    args = parser.parse_args(argv)
    if args.command == "generate":
        start = SPLIT_SEEDS[args.split] if args.split else (args.seed or 0)
        manifest = generate(args.out, args.n, start, args.size)
        print(json.dumps({"manifest": str(manifest), "n": args.n, "first_seed": start}))
    elif args.command == "train-clip":
        from wsss_ray.toyworld.train_clip import TrainClipConfig, train_clip

        cfg = TrainClipConfig(seed=args.seed, minutes=args.minutes)
        if args.steps:
            cfg.steps = args.steps
        summary = train_clip(args.out, cfg)
        print(json.dumps({k: summary[k] for k in ("steps", "minutes")}))
    else:
        from wsss_ray.toyworld.demo import run_demo

        print(json.dumps(run_demo(args.out, args.n)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
