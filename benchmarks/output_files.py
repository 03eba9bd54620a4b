"""Listing and read time of a labelling output by rows per Parquet file (the unit of resume).

    .venv/bin/python benchmarks/output_files.py [--rows 1000000] [--rows-per-file 64 1024 8192] [--s3-rows 100000]

Writes an output of `--rows` rows in the job's schema (a 1.5 KB mask and 0.5 KB
confidence PNG-sized payload per row, like a 500x375 VOC pseudo-mask) with each
rows-per-file setting, then times what the job and its readers do with it: listing
the files (``wsss_ray.store.output.parquet_files``), reading every id (what a resume reads)
and reading every column. With ``--s3-rows`` the same is timed on an S3 server
(moto on loopback) for that many rows: there every 1,000 files cost one more LIST
request and every file at least one GET.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from wsss_ray.store import filesystem
from wsss_ray.store import OUTPUT_SCHEMA, parquet_files


def table(start: int, n: int, rng: np.random.Generator) -> pa.Table:
    mask, conf = rng.bytes(1536), rng.bytes(512)
    return pa.table({
        "id": [f"img{i:09d}" for i in range(start, start + n)], "image": [f"s3://b/img{i:09d}.jpg" for i in
                                                                          range(start, start + n)],
        "labels": [["cow", "person"]] * n, "width": [500] * n, "height": [375] * n,
        "mask": [mask] * n, "confidence": [conf] * n, "status": ["ok"] * n, "error": [None] * n,
        "labelset": ["voc"] * n, "model": ["ViT-B-16"] * n, "method": ["clip-es"] * n, "run_id": ["r"] * n,
    }, schema=OUTPUT_SCHEMA)


def write(output: str, rows: int, per_file: int) -> None:
    fs, path = filesystem(output)
    fs.create_dir(path, recursive=True)
    rng = np.random.default_rng(0)
    for k, start in enumerate(range(0, rows, per_file)):
        pq.write_table(table(start, min(per_file, rows - start), rng), f"{path}/part-{k:08d}.parquet", filesystem=fs)


def timed(output: str) -> dict:
    t0 = time.perf_counter()
    fs, files = parquet_files(output)
    t1 = time.perf_counter()
    ids = pads.dataset(files, format="parquet", filesystem=fs).to_table(columns=["id"])
    t2 = time.perf_counter()
    rows = pads.dataset(files, format="parquet", filesystem=fs).to_table().num_rows
    t3 = time.perf_counter()
    assert ids.num_rows == rows
    return {"files": len(files), "list_s": round(t1 - t0, 3), "read_ids_s": round(t2 - t1, 3),
            "read_all_s": round(t3 - t2, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rows-per-file", type=int, nargs="+", default=[64, 1024, 8192])
    parser.add_argument("--s3-rows", type=int, default=0, help="also time S3 (moto) with this many rows")
    args = parser.parse_args(argv)
    results = []
    work = Path(tempfile.mkdtemp(prefix="output-files-"))
    try:
        for per_file in args.rows_per_file:
            out = str(work / f"local-{per_file}")
            write(out, args.rows, per_file)
            results.append({"where": "local disk", "rows": args.rows, "rows_per_file": per_file, **timed(out)})
            shutil.rmtree(out)
            print(results[-1], flush=True)
        if args.s3_rows:
            from wsss_ray.testing.s3 import CREDENTIALS, moto_server

            with moto_server("bench") as url:
                os.environ.update({**CREDENTIALS, "AWS_ENDPOINT_URL": url})
                for per_file in args.rows_per_file:
                    out = f"s3://bench/out-{per_file}"
                    write(out, args.s3_rows, per_file)
                    results.append({"where": "S3 (moto, loopback)", "rows": args.s3_rows, "rows_per_file": per_file,
                                    **timed(out)})
                    print(results[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n| where | rows | rows per file | files | list s | read ids s | read all s |\n|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['where']} | {r['rows']:,} | {r['rows_per_file']:,} | {r['files']:,} | {r['list_s']} | "
              f"{r['read_ids_s']} | {r['read_all_s']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
