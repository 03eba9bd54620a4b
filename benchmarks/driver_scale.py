"""Driver memory and time of the labelling job as the collection grows.

    .venv/bin/python benchmarks/driver_scale.py --items 100000 1000000

For each size, a manifest of that many lines (ids, paths to images that do not
exist, two labels each) is labelled by ``wsss_ray.pipeline.run`` in a fresh
process on a local 2-CPU Ray: every row becomes a fast error row, so no model runs
and what is measured is the driver's own cost. Printed per size: wall time, the
driver process's peak resident memory (``VmHWM``: Ray's workers are other
processes), rows written and whether every id is in the output exactly once.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_manifest(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"img{i:09d}", "image": f"missing/img{i:09d}.jpg",
                                "labels": ["cow", "sheep"]}) + "\n")


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one(manifest: str, output: str) -> dict:
    """Label `manifest` into `output` in this process; the driver's figures."""
    start = time.time()
    import ray

    from wsss_ray.config import resolve_label_job
    from wsss_ray.pipeline import run

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    config = resolve_label_job({"input": manifest, "output": output, "post": {"crf": {"iters": 0}}})
    summary = run(config, progress_interval=60)
    seconds = time.time() - start
    import pyarrow.dataset as pads

    ids = pads.dataset(output, format="parquet").to_table(columns=["id"]).column("id")
    return {"seconds": round(seconds, 1), "driver_peak_rss_mb": round(peak_rss_mb()),
            "rows": summary["rows"], "errors": summary["errors"],
            "ids_once": len(ids) == len(set(ids.to_pylist()))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--one", nargs=2, metavar=("MANIFEST", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(*args.one)), flush=True)
        return 0
    rows = []
    for n in args.items:
        work = Path(tempfile.mkdtemp(prefix=f"driver-{n}-"))
        write_manifest(work / "manifest.jsonl", n)
        out = subprocess.run([sys.executable, __file__, "--one", str(work / "manifest.jsonl"), str(work / "out")],
                             capture_output=True, text=True)
        if out.returncode:
            rows.append({"items": n, "error": out.stderr[-500:]})
        else:
            rows.append({"items": n, **json.loads(out.stdout.strip().splitlines()[-1])})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| items | wall s | driver peak RSS MB | rows | every id once |\n|---|---|---|---|---|")
    for r in rows:
        if "error" not in r:
            print(f"| {r['items']:,} | {r['seconds']} | {r['driver_peak_rss_mb']} | {r['rows']:,} | {r['ids_once']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
