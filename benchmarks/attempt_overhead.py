"""What the labelling job's retry accounting costs.

    .venv/bin/python benchmarks/attempt_overhead.py [--n 48] [--calls 500]

Each costly stage of the job (CAM, CRF) records the batch it starts with
``rows.count_attempt`` and waits for the job's ``RowCounter`` to answer, so that the
summary can say how many batches ran more than once. This runs the labelling job
once on ``--n`` toy images (local Ray, 2 CPUs), then, in the same Ray instance,
times ``--calls`` such calls from a Ray task to a counter on the driver's node.
A batch holds at least one row and meets two stages, so the job makes at most
``2 * n`` calls, and ``2 * ceil(n / batch_size)`` when every batch is full; the
share of the job's time is printed for both.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import ray

from wsss_ray.config import LabelJobConfig
from wsss_ray.pipeline import run
from wsss_ray.progress import RowCounter, count_attempt, on_this_node
from wsss_ray.toyworld import generate


@ray.remote(num_cpus=1)
def _time_attempts(counter, calls: int, batch_size: int) -> float:
    """Seconds for `calls` count_attempt calls, each for a batch of `batch_size` new ids."""
    start = time.perf_counter()
    for i in range(calls):
        count_attempt(counter, "cam", [f"img{i:07d}-{j}" for j in range(batch_size)])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48, help="toy images the job labels")
    parser.add_argument("--calls", type=int, default=500, help="count_attempt calls timed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = generate(Path(tmp) / "toy", args.n, seed=2_000_700)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            config = LabelJobConfig(input=str(manifest), output=f"{tmp}/out")
            start = time.perf_counter()
            summary = run(config)
            job_s = time.perf_counter() - start
            assert summary["ok"] == args.n, summary
            counter = RowCounter.options(scheduling_strategy=on_this_node()).remote()
            ray.get(_time_attempts.remote(counter, 20, config.batch_size))  # the task's worker warmed up
            call_s = ray.get(_time_attempts.remote(counter, args.calls, config.batch_size)) / args.calls
        finally:
            ray.shutdown()
    most, full = 2 * args.n, 2 * math.ceil(args.n / config.batch_size)
    print(json.dumps({"images": args.n, "batch_size": config.batch_size, "job_s": round(job_s, 1),
                      "count_attempt_ms": round(call_s * 1e3, 3), "calls_at_most": most, "calls_full_batches": full,
                      "share_at_most_pct": round(100 * most * call_s / job_s, 3),
                      "share_full_batches_pct": round(100 * full * call_s / job_s, 3)}))


if __name__ == "__main__":
    main()
