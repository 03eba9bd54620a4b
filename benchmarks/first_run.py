"""What a new user sees: `make run` on a fresh clone, every output line timed, the longest silence.

    .venv/bin/python benchmarks/first_run.py            # clone HEAD into a temporary folder, `make run` there
    .venv/bin/python benchmarks/first_run.py --here     # `make run` in this checkout (an install is skipped)
    .venv/bin/python benchmarks/first_run.py --command "make test" --keep

Prints each line with the seconds since the start and since the line before, then the total,
the longest stretch with no output (and the line that ended it), and the summary's
``overview`` and ``mlflow_ui``. The install is part of it on a fresh clone: pip takes torch
from the machine's wheel cache, so the figure depends on that cache being warm.
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

ROOT = Path(__file__).resolve().parent.parent


def timed_lines(command: str, cwd: Path) -> tuple[list[tuple[float, str]], int]:
    """Run `command` (stdout and stderr together), each line with its arrival time since the start."""
    start = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.Popen(command, shell=True, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, env=env)
    lines = []
    for line in proc.stdout:
        lines.append((time.monotonic() - start, line.rstrip("\n")))
    lines.append((time.monotonic() - start, f"(exit {proc.wait()})"))
    return lines, proc.returncode


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--here", action="store_true", help="run in this checkout instead of a fresh clone")
    p.add_argument("--command", default="make run")
    p.add_argument("--keep", action="store_true", help="keep the fresh clone (its path is printed)")
    args = p.parse_args()
    where = ROOT
    if not args.here:
        where = Path(tempfile.mkdtemp(prefix="wsss-ray-first-run-")) / "wsss-ray"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(where)], check=True)
    try:
        lines, status = timed_lines(args.command, where)
    finally:
        if not args.here and not args.keep:
            shutil.rmtree(where.parent, ignore_errors=True)
    previous = 0.0
    gaps = []
    for at, line in lines:
        gaps.append((at - previous, at, line))
        print(f"{at:7.1f} (+{at - previous:5.1f}) {line[:160]}")
        previous = at
    gap, at, line = max(gaps)
    summary = next((json.loads(line) for _, line in reversed(lines) if line.startswith("{")), {})
    print(f"\n{args.command!r} in {'this checkout' if args.here else 'a fresh clone'} ({where}): "
          f"exit {status}, {lines[-1][0]:.1f} s, {len(lines)} lines")
    print(f"longest silence: {gap:.1f} s, ended at {at:.1f} s by: {line[:160]}")
    for key in ("rows", "ok", "miou", "overview", "mlflow_ui"):
        print(f"{key}: {summary.get(key)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
