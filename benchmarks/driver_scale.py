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

from wsss_ray.testing.processes import kill_tree


def write_manifest(path: Path, n: int, shards: int) -> str:
    """`n` lines in one file (`shards` 1) or a folder of `shards` JSONL shards; returns the SOURCE."""
    if shards == 1:
        files = [path.with_suffix(".jsonl")]
    else:
        path.mkdir()
        files = [path / f"shard-{k:05d}.jsonl" for k in range(shards)]
    per = -(-n // len(files))
    for k, file in enumerate(files):
        with file.open("w") as f:
            for i in range(k * per, min(n, (k + 1) * per)):
                f.write(json.dumps({"id": f"img{i:09d}", "image": f"missing/img{i:09d}.jpg",
                                    "labels": ["cow", "sheep"]}) + "\n")
    return str(files[0] if shards == 1 else path)


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one(manifest: str, output: str, batch_size: int | None, rows_per_file: int | None) -> dict:
    """Label `manifest` into `output` in this process; the driver's figures."""
    start = time.time()
    import ray

    from wsss_ray.config import resolve_label_job
    from wsss_ray.pipeline import run

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # its own Ray
    settings = {"batch_size": batch_size, "rows_per_file": rows_per_file}
    config = resolve_label_job({"input": manifest, "output": output, "post": {"crf": {"iters": 0}},
                                **{k: v for k, v in settings.items() if v is not None}})
    summary = run(config, progress_interval=60)
    return {"seconds": round(time.time() - start, 1), "driver_peak_rss_mb": round(peak_rss_mb()),
            "rows": summary["rows"], "skipped": summary.get("skipped"), "errors": summary["errors"],
            "torch_imported": "torch" in sys.modules}


def ids_once(output: str, n: int) -> bool:
    """Whether the output holds ids img000000000..n-1, each exactly once (checked column-wise, not in Python)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    ids = pads.dataset(output, format="parquet").to_table(columns=["id"]).column("id")
    return len(ids) == n and pc.count_distinct(ids).as_py() == n and \
        pc.min(ids).as_py() == "img000000000" and pc.max(ids).as_py() == f"img{n - 1:09d}"


def labelled(source: str, output: str, settings: list[str], kill_after: float | None = None) -> dict:
    """Run :func:`one` in a fresh process (its own local Ray); with `kill_after`, SIGKILL it and its Ray then."""
    cmd = [sys.executable, __file__, "--one", source, output, *settings]
    if kill_after is None:
        out = subprocess.run(cmd, capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith('{"seconds"')]
        if out.returncode or not lines:
            return {"error": f"exit {out.returncode}: {out.stdout[-400:]} {out.stderr[-800:]}"}
        return json.loads(lines[-1])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(kill_after)
    kill_tree(proc)
    return {"killed_after_s": kill_after}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--lines-per-shard", type=int, default=500_000,
                        help="manifest lines per shard; 0 writes one file whatever the size (default: 500000)")
    parser.add_argument("--resume-after", type=float, metavar="SECONDS",
                        help="SIGKILL the first run after SECONDS, then run again into the same output (resume)")
    parser.add_argument("--work", help="folder for manifests and outputs (default: a new temporary folder)")
    parser.add_argument("--batch-size", type=int, help="the job's --batch-size (default: the job's)")
    parser.add_argument("--rows-per-file", type=int, help="the job's --rows-per-file (default: the job's)")
    parser.add_argument("--one", nargs=2, metavar=("MANIFEST", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(*args.one, args.batch_size, args.rows_per_file)), flush=True)
        return 0
    settings = [arg for flag, value in (("--batch-size", args.batch_size), ("--rows-per-file", args.rows_per_file))
                if value is not None for arg in (flag, str(value))]
    rows = []
    for n in args.items:
        work = Path(tempfile.mkdtemp(prefix=f"driver-{n}-", dir=args.work))
        shards = 1 if not args.lines_per_shard else max(1, -(-n // args.lines_per_shard))
        source = write_manifest(work / "manifest", n, shards)
        row: dict = {"items": n, "shards": shards}
        if args.resume_after is not None:
            row["first_run"] = labelled(source, str(work / "out"), settings, args.resume_after)
            row["written_before_resume"] = _rows_in(str(work / "out"))
        row.update(labelled(source, str(work / "out"), settings))
        if "error" not in row:
            row["ids_once"] = ids_once(str(work / "out"), n)
            row["files"] = len(list((work / "out").glob("*.parquet")))
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| items | manifest shards | wall s | driver peak RSS MB | rows | output files | every id once |\n"
          "|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" not in r:
            print(f"| {r['items']:,} | {r['shards']} | {r['seconds']} | {r['driver_peak_rss_mb']} | {r['rows']:,} | "
                  f"{r['files']:,} | {r['ids_once']} |")
    return 0


def _rows_in(output: str) -> int:
    import pyarrow.dataset as pads

    return pads.dataset(output, format="parquet").count_rows() if Path(output).is_dir() else 0


if __name__ == "__main__":
    raise SystemExit(main())
