"""The labelling job under the faults of docs/RESULTS.md's fault table (all but a lost node,
which is benchmarks/node_loss.py), each against the same job without the fault.

On local Ray (2 CPUs), toy world of `--n` images, batch size 4:

- two runs into one output: a second run started while the first holds the output
  (its claim fresh) is refused; the seconds until the refusal;
- a re-run after the driver was SIGKILLed: it takes over the dead run's claim (this
  host, process gone) and writes the rest; the rows of both runs together;
- MLflow unreachable: ``--mlflow-uri`` of a port where nothing listens, against a
  local sqlite store;
- transient object-store errors: input and output on S3 (moto) behind a proxy that
  fails every request twice first (a 503 SlowDown, then a reset connection), against
  the same without failures; an output bucket that does not exist: seconds to the error.

    .venv/bin/python benchmarks/faults.py [--n 48]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def job(args: list[str], env: dict | None = None) -> tuple[float, dict | None, str]:
    """jobs/pseudolabel.py with `args`: (seconds, its summary or None, its stderr)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "jobs/pseudolabel.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - start
    summary = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
    return seconds, summary, done.stderr


def _ray_processes() -> set[int]:
    """PIDs of this user's Ray processes (raylet, GCS, workers)."""
    from wsss_ray.testing.processes import command_lines

    return {pid for pid, cmd in command_lines().items()
            if "raylet" in cmd or "gcs_server" in cmd or cmd.startswith("ray::") or "default_worker.py" in cmd}


def ids_of(output: str) -> collections.Counter:
    from wsss_ray.store import read_output

    table = read_output(output, ["id"])
    return collections.Counter(table.column("id").to_pylist() if table is not None else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=48)
    args = parser.parse_args()
    from wsss_ray.store import OutputClaim
    from wsss_ray.toyworld import generate

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = str(generate(tmp / "toy", args.n, seed=3_200_000))
        store = f"sqlite:///{tmp / 'mlflow.db'}"
        common = ["--input", manifest, "--batch-size", "4"]

        base_s, base, _ = job([*common, "--output", str(tmp / "base"), "--mlflow-uri", store])
        rows.append(("none (the baseline)", "-", f"{base['ok']} ok", 0, 0, f"{base_s:.1f} s in all"))

        with OutputClaim(str(tmp / "held"), "first-run"):
            refused_s, refused, err = job([*common, "--output", str(tmp / "held"), "--mlflow-uri", store])
        assert refused is None and "is being written by run first-run" in err, err[-2000:]
        rows.append(("two runs into one output", "a second run started while another holds the output",
                     "refused before any work, naming the holder", 0, 0, f"refused after {refused_s:.1f} s"))

        out = tmp / "killed"
        before = _ray_processes()
        proc = subprocess.Popen([sys.executable, "jobs/pseudolabel.py", *common, "--output", str(out),
                                 "--rows-per-file", "8", "--mlflow-uri", store], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        while not list(out.glob("part-*.parquet")) and proc.poll() is None:
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started, as a lost head would
        proc.wait()
        rerun_s, rerun, err = job([*common, "--output", str(out), "--mlflow-uri", store])
        for pid in _ray_processes() - before:  # what the killed driver's Ray left (its own sessions)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        counts = ids_of(str(out))
        rows.append(("driver killed, re-run at once", "SIGKILL to the driver's process group after its first file",
                     f"took over the dead run's claim, wrote the other {rerun['rows']} ({rerun['skipped']} skipped)",
                     args.n - len(counts), sum(c - 1 for c in counts.values()),
                     f"{rerun_s - base_s:+.1f} s (re-run against the baseline)"))

        from wsss_ray.testing.loopback import free_port

        down = f"http://127.0.0.1:{free_port()}"
        down_s, down_summary, err = job([*common, "--output", str(tmp / "untracked"), "--mlflow-uri", down])
        assert err.count("cannot be reached") == 1, err[-2000:]
        counts = ids_of(str(tmp / "untracked"))
        rows.append(("MLflow unreachable", "--mlflow-uri of a port where nothing listens",
                     "labelled, warned once, kept the record under OUTPUT/_tracking", args.n - len(counts),
                     sum(c - 1 for c in counts.values()), f"{down_s - base_s:+.1f} s"))

        rows += s3_rows(tmp, manifest, args.n)

    print("| fault | injected | what the job did | rows lost | rows duplicated | extra time |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


def s3_rows(tmp: Path, manifest: str, n: int) -> list[tuple]:
    import boto3

    from wsss_ray.testing.s3 import CREDENTIALS, FaultyS3, moto_server

    os.environ.update(CREDENTIALS)
    store = f"sqlite:///{tmp / 'mlflow-s3.db'}"
    common = ["--input", "s3://toy/collection/manifest.jsonl", "--batch-size", "4", "--mlflow-uri", store]
    rows = []
    with moto_server("toy") as moto:
        client = boto3.client("s3", endpoint_url=moto)
        local = Path(manifest).parent
        for path in local.rglob("*"):
            if path.is_file():
                client.upload_file(str(path), "toy", f"collection/{path.relative_to(local)}")
        timings = {}
        for name, transient in (("clean", 0), ("flaky", 2)):
            with FaultyS3(moto, transient=transient) as proxy:
                env = {**CREDENTIALS, "AWS_ENDPOINT_URL": proxy.url}
                timings[name] = job([*common, "--output", f"s3://toy/out-{name}"], env)
                injected = sum(proxy.injected.values())
        os.environ["AWS_ENDPOINT_URL"] = moto
        counts = ids_of("s3://toy/out-flaky")
        clean_s, flaky_s = timings["clean"][0], timings["flaky"][0]
        rows.append(("transient S3 errors", f"every request failed twice first ({injected} failures injected)",
                     "retried with backoff; finished", n - len(counts), sum(c - 1 for c in counts.values()),
                     f"{flaky_s - clean_s:+.1f} s (against {clean_s:.1f} s on S3 without failures)"))
        with FaultyS3(moto) as proxy:
            missing_s, missing, err = job([*common, "--output", "s3://no-such-bucket/out"],
                                          {**CREDENTIALS, "AWS_ENDPOINT_URL": proxy.url})
        assert missing is None and "cannot write to the output s3://no-such-bucket/out" in err, err[-2000:]
        rows.append(("permanent S3 error", "--output in a bucket that does not exist",
                     "refused before any image, one sentence", 0, 0, f"failed after {missing_s:.1f} s"))
    return rows


if __name__ == "__main__":
    main()
