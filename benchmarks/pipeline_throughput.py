"""Images/s of the Ray Data pseudo-labelling job against a serial loop, and 1 vs 2 CPUs.

The serial loop is how the reference implementation runs: one process, one image at
a time, decode -> CAM -> CRF -> PNG, with the same model and settings. It runs once
with one torch thread and once with torch's default (all cores). The job runs on a
fresh local Ray instance limited to N CPUs, each measurement in its own process so
Ray starts clean, and its time includes Ray's start-up. Every figure is measured in
this run. Settings: toyclip's own (its bundled label_config.yaml: 4 scales, CRF);
masks are the full argmax.

    .venv/bin/python benchmarks/pipeline_throughput.py [--n 1000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (row name, how) ; how = serial:<threads> | job:<cpus>:<concurrency>:<num_cpus per actor>
RUNS = [
    ("serial loop, 1 thread", "serial:1"),
    ("serial loop, torch default threads", "serial:0"),
    ("job, 1 CPU, 1 CAM actor (shares the CPU with decode/CRF)", "job:1:1:1"),
    ("job, 2 CPUs, 1 CAM actor", "job:2:1:1"),
    ("job, 2 CPUs, 2 CAM actors (--num-cpus 0.5)", "job:2:2:0.5"),
]


def serial(manifest: str, n: int, threads: int) -> float:
    import torch

    from wsss_ray.labeler import Labeler
    from wsss_ray.masks import encode_png
    from wsss_ray.store import load_image, read_source

    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    labeler = Labeler.from_spec("toyclip", "toyworld")  # toyclip's bundled label settings
    for it in read_source(manifest)[:n]:
        r = labeler.label([load_image(it.image)], [list(it.labels)])[0]
        encode_png(r.mask), encode_png(r.confidence, palette=False)
    return n / (time.perf_counter() - start)


def job(manifest: str, n: int, cpus: int, concurrency: int, num_cpus: float, out: str) -> float:
    from wsss_ray.config import resolve_label_job

    start = time.perf_counter()
    import ray

    from wsss_ray.pipeline import run

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    # The job's own resolution: defaults < toyclip's bundled label_config.yaml < these settings.
    cfg = resolve_label_job({"model": "toyclip", "input": manifest, "output": out, "limit": n,
                             "concurrency": (concurrency, concurrency), "num_cpus": num_cpus})
    summary = run(cfg, progress_interval=3600)
    assert summary["rows"] == n, summary
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:  # one measurement, in a child process
        kind, *how = args.measure.split(":")
        rate = (serial(args.manifest, args.n, int(how[0])) if kind == "serial"
                else job(args.manifest, args.n, int(how[0]), int(how[1]), float(how[2]), args.out))
        print(json.dumps({"images_per_s": rate}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        from wsss_ray.toyworld import SPLIT_SEEDS, generate

        manifest = str(generate(Path(tmp) / "toy", args.n, seed=SPLIT_SEEDS["test"]))
        rates = {}
        for i, (name, how) in enumerate(RUNS):
            cmd = [sys.executable, __file__, "--measure", how, "--n", str(args.n), "--manifest", manifest,
                   "--out", str(Path(tmp) / f"out-{i}")]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            rates[name] = json.loads(line)["images_per_s"]
            print(f"{name}: {rates[name]:.2f} images/s", file=sys.stderr, flush=True)
    base = rates[RUNS[0][0]]
    print(f"{args.n} toy-world images, toyclip, toy-world settings (4 scales, CRF); "
          "times include model loading and, for the job, Ray start-up")
    print("| run | images/s | vs serial loop, 1 thread |\n|---|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.2f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
