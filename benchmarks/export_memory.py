"""Speed and peak memory of ``python -m wsss_ray.export`` per format against the number of rows.

Writes a synthetic labelling output of each size (files of 4,096 rows, the job's
default; 128x128 masks and confidence maps drawn from 64 distinct ones), then runs
the export in a fresh process per (size, format) and reads its wall time (rows/s) and its
peak resident memory (``ru_maxrss`` of the child). With ``--tree DIR`` the export runs
from another checkout of the project (an older commit, png only, for the before figure).

    .venv/bin/python benchmarks/export_memory.py [--rows 10000 20000 200000] [--formats png labelstudio coco fiftyone]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wsss_ray.masks import encode_png
from wsss_ray.store import OUTPUT_SCHEMA

ROWS_PER_FILE = 4096


def write_output(folder: Path, rows: int, side: int = 128, distinct: int = 64) -> None:
    """`rows` ok rows in files of ROWS_PER_FILE, masks and confidences cycling through `distinct` ones."""
    rng = np.random.default_rng(0)
    masks, confidences = [], []
    for _ in range(distinct):
        mask = np.zeros((side, side), np.uint8)
        y, x = rng.integers(0, side // 2, 2)
        mask[y:y + side // 2, x:x + side // 2] = rng.integers(1, 21)
        masks.append(encode_png(mask))
        confidences.append(encode_png(rng.integers(120, 256, (side, side), dtype=np.uint8), palette=False))
    folder.mkdir(parents=True)
    for start in range(0, rows, ROWS_PER_FILE):
        n = min(ROWS_PER_FILE, rows - start)
        ids = [f"img{i:08d}" for i in range(start, start + n)]
        table = pa.table({
            "id": ids, "image": [f"{i}.jpg" for i in ids], "labels": [["cow"]] * n,
            "width": pa.array([side] * n, pa.int32()), "height": pa.array([side] * n, pa.int32()),
            "mask": [masks[i % distinct] for i in range(start, start + n)],
            "confidence": [confidences[i % distinct] for i in range(start, start + n)],
            "status": ["ok"] * n, "error": [None] * n, "labelset": ["voc"] * n, "model": ["m"] * n,
            "method": ["clip-es"] * n, "run_id": ["r"] * n, "quality": pa.array([0.5] * n, pa.float32()),
            "label_quality": [[0.5]] * n}, schema=OUTPUT_SCHEMA)
        pq.write_table(table, folder / f"part-{start // ROWS_PER_FILE:06d}.parquet")


def export_peak_mb(output: Path, fmt: str, to: Path, tree: Path | None) -> tuple[float, float, str]:
    """(peak RSS in MB, seconds, the export's JSON line) of one export in a fresh process."""
    env = dict(os.environ)
    flags = ["--png-dir", str(to)] if tree is not None else ["--format", fmt, "--to", str(to)]
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    code = ("import resource, runpy, sys; sys.argv = ['export', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('wsss_ray.export', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, str(output), *flags], capture_output=True, text=True,
                          env=env, cwd=tree or Path.cwd())
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    peak_kb = int(next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("peak_kb")))
    return peak_kb / 1024, seconds, done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 20_000, 200_000])
    parser.add_argument("--formats", nargs="+", default=["png", "labelstudio", "coco", "fiftyone"])
    parser.add_argument("--tree", type=Path, help="run the export from this checkout (default: the installed package)")
    args = parser.parse_args()
    print("| rows | format | export peak RSS (MB) | seconds | rows/s | rows written |\n|---|---|---|---|---|---|")
    for rows in args.rows:
        with tempfile.TemporaryDirectory(prefix="export-memory-") as tmp:
            write_output(Path(tmp) / "out", rows)
            for fmt in args.formats:
                to = Path(tmp) / (f"{fmt}.json" if fmt == "coco" else fmt)
                peak, seconds, line = export_peak_mb(Path(tmp) / "out", fmt, to, args.tree)
                summary = json.loads(line)
                written = summary.get("written", summary.get("images"))
                print(f"| {rows:,} | {fmt} | {peak:.0f} | {seconds:.1f} | {rows / seconds:,.0f} | {written:,} |",
                      flush=True)
                shutil.rmtree(to, ignore_errors=True) if to.is_dir() else to.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
