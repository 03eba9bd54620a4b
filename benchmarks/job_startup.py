"""How fast each job answers ``--help``, and what it imports to do so, in fresh processes.

Every job's flags and settings are checked before anything heavy starts, so ``--help``
(and a wrong flag) should answer at once, importing none of torch, open_clip, Ray,
MLflow or pyarrow. Times are wall clock per fresh interpreter, best of `--repeats`,
against a bare ``python -c pass`` measured in the same run.

With ``--tree DIR`` the jobs of another checkout run (an older commit, for the before figure).

    .venv/bin/python benchmarks/job_startup.py [--repeats 5] [--tree DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "open_clip", "ray", "mlflow", "pyarrow")
HELP = """
import json, runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
print(json.dumps(sorted(m for m in %r if m in sys.modules)), file=sys.stderr)
""" % (HEAVY,)


def best(cmd: list[str], repeats: int, tree: Path = ROOT) -> tuple[float, str]:
    times, stderr = [], ""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=tree, env=env)
        times.append(time.perf_counter() - start)
        stderr = done.stderr
    return min(times), stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose jobs run (default: this one)")
    args = parser.parse_args()
    bare, _ = best([sys.executable, "-c", "pass"], args.repeats)
    print(f"bare interpreter: {bare:.3f} s (best of {args.repeats})")
    print("| job | --help, s | heavy modules imported |\n|---|---|---|")
    for job in sorted((args.tree / "jobs").glob("*.py")):
        seconds, stderr = best([sys.executable, "-c", HELP, str(job)], args.repeats, args.tree)
        heavy = json.loads(stderr.strip().splitlines()[-1])
        print(f"| {job.name} | {seconds:.3f} | {', '.join(heavy) or 'none'} |", flush=True)


if __name__ == "__main__":
    main()
