"""Images/s of the Ray Data pseudo-labelling job against a serial loop, and 1 vs 2 CPUs.

The serial loop is how the reference implementation runs: one process, one image at
a time, decode -> CAM -> CRF -> PNG, with the same model and settings. The job runs
on a fresh local Ray instance limited to --cpus CPUs (each measurement in its own
process, so Ray starts clean). Every figure is measured in this run.

    .venv/bin/python benchmarks/pipeline_throughput.py [--n 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def serial(manifest: str, n: int) -> float:
    import torch

    from wsss_ray.labeler import Labeler
    from wsss_ray.masks import encode_png
    from wsss_ray.sources import load_image, read_source
    from wsss_ray.toyworld import embedded_default

    torch.set_num_threads(1)
    _, config = embedded_default(Path(manifest).parent, n)
    labeler = Labeler.from_spec("toyclip", "toyworld", config)
    items = read_source(manifest)[:n]
    start = time.perf_counter()
    for it in items:
        r = labeler.label([load_image(it.image)], [list(it.labels)])[0]
        encode_png(r.mask), encode_png(r.confidence, palette=False)
    return len(items) / (time.perf_counter() - start)


def job(manifest: str, n: int, cpus: int, out: str) -> float:
    import ray

    from wsss_ray.pipeline import PipelineConfig, run
    from wsss_ray.toyworld import embedded_default

    _, config = embedded_default(Path(manifest).parent, n)
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    cfg = PipelineConfig(input=manifest, output=out, limit=n, batch_size=16, label=config,
                         min_actors=1, max_actors=max(1, cpus - 1))
    start = time.perf_counter()
    summary = run(cfg)
    return summary["rows"] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--measure", choices=["serial", "job"], help=argparse.SUPPRESS)
    parser.add_argument("--cpus", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:  # one measurement, in a child process
        rate = serial(args.manifest, args.n) if args.measure == "serial" else job(args.manifest, args.n, args.cpus, args.out)
        print(json.dumps({"images_per_s": rate}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        from wsss_ray.toyworld import embedded_default

        manifest, _ = embedded_default(Path(tmp) / "toy", args.n)

        def measure(kind: str, cpus: int = 1) -> float:
            cmd = [sys.executable, __file__, "--measure", kind, "--n", str(args.n), "--cpus", str(cpus),
                   "--manifest", manifest, "--out", str(Path(tmp) / f"out-{kind}-{cpus}")]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            return json.loads(line)["images_per_s"]

        rates = {"serial loop (1 process, 1 thread)": measure("serial"),
                 "Ray Data job, 1 CPU": measure("job", 1), "Ray Data job, 2 CPUs": measure("job", 2)}
    base = rates["serial loop (1 process, 1 thread)"]
    print(f"{args.n} toy-world images, toyclip, toy-world settings (4 scales, CRF)")
    print("| run | images/s | vs serial loop |\n|---|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.2f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
