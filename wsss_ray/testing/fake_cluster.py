"""The pseudolabel job on the fake autoscaling cluster of ``cluster/local.yaml``, timed.

:func:`scale_cycle` starts the cluster (Ray's fake_multinode provider: a head with 0
CPUs, worker "nodes" that are extra raylets on this machine, min 0: a CPU type and
a type with one fake GPU), submits the job without ``--num-gpus`` with ``ray job
submit --no-wait``, and times from the moment the submission is accepted: -> first
worker node alive, -> job finished, and job finished -> no worker node left. It
records which nodes the CAM actors ran on (their GPUs) and the job's placement line.
Its GCS must listen on the default port 6379 (the fake provider's nodes join there);
the teardown stops only the processes of that cluster. It needs the source checkout
(``cluster/``, ``jobs/``). ``tests/test_fake_cluster.py`` asserts on what it returns;
``benchmarks/fake_cluster_scaling.py`` prints the timings.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from wsss_ray.testing.loopback import free_port
from wsss_ray.testing.processes import command_lines

REPO = Path(__file__).resolve().parents[2]  # the source checkout: cluster/ and jobs/
DASHBOARD = {"url": "http://127.0.0.1:8265"}  # the running scenario's; set by scale_cycle to a free port


def _get(path: str) -> dict:
    with urllib.request.urlopen(f"{DASHBOARD['url']}{path}", timeout=5) as r:
        return json.loads(r.read())


def worker_nodes() -> int:
    """Alive nodes other than the head."""
    nodes = _get("/api/v0/nodes?limit=100&detail=false")["data"]["result"]["result"]
    return sum(1 for n in nodes if n["state"] == "ALIVE" and not n["is_head_node"])


def placements(seen: dict) -> None:
    """Record into `seen` each alive node's resources and the node of each CAM actor."""
    for n in _get("/api/v0/nodes?limit=100&detail=true")["data"]["result"]["result"]:
        seen.setdefault("nodes", {})[n["node_id"]] = n.get("resources_total", {})
    for a in _get("/api/v0/actors?limit=1000&detail=true")["data"]["result"]["result"]:
        if "CamStage" in a.get("class_name", "") and a.get("node_id"):
            seen.setdefault("cam_actors", {})[a["actor_id"]] = a["node_id"]


def job_status(submission_id: str) -> str:
    return _get(f"/api/jobs/{submission_id}")["status"]


def _run(cmd: list[str], env: dict, retry_s: float = 0) -> None:
    """Run a ray CLI command; retry while the new head's job agent answers "try again later"."""
    deadline = time.time() + retry_s
    while True:
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if not result.returncode:
            return
        if "try again later" not in result.stderr or time.time() > deadline:
            raise RuntimeError(f"{' '.join(cmd[:3])} failed ({result.returncode}): {result.stderr[-2000:]}")
        time.sleep(2)


def _wait(predicate, timeout: float, what: str, poll: float = 0.5) -> float:
    start = time.time()
    while not predicate():
        if time.time() - start > timeout:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(poll)
    return time.time()


def scale_cycle(workdir: Path, n: int = 24, timeout: float = 600) -> dict:
    """Run one job on a fresh fake cluster; returns the timings, the job's summary and the output path."""
    from wsss_ray.toyworld import generate

    bin_dir = str(Path(sys.executable).parent)
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
           "RAY_AUTH_MODE": "disabled", "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    manifest = generate(workdir / "toy", n, seed=2_000_700)
    output = workdir / "out"
    ray = [f"{bin_dir}/ray"]
    dashboard_port = free_port()  # not 8265, which another Ray on this machine may hold
    DASHBOARD["url"] = f"http://127.0.0.1:{dashboard_port}"
    _run(ray + ["start", "--head", "--num-cpus=0", f"--autoscaling-config={REPO / 'cluster' / 'local.yaml'}",
                "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", "--disable-usage-stats",
                f"--dashboard-agent-listen-port={free_port()}"], env)  # 52365 may belong to another Ray
    try:
        _wait(lambda: _reachable(), 120, "the dashboard")
        workers_before = worker_nodes()
        _run(ray + ["job", "submit", "--no-wait", "--submission-id", "fake-cluster-job",
                    "--address", DASHBOARD["url"], "--working-dir", str(REPO), "--",
                    "python", "jobs/pseudolabel.py", "--input", str(manifest), "--output", str(output),
                    "--mlflow-uri", f"sqlite:///{workdir}/mlflow.db", "--batch-size", "4", "--concurrency", "1,2"],
             env, retry_s=120)
        submitted = time.time()  # accepted: uploaded and queued (--no-wait)
        up = _wait(lambda: worker_nodes() > 0, timeout, "scale-up")
        seen: dict = {}

        def finished() -> bool:
            with contextlib.suppress(OSError, KeyError):
                placements(seen)
            return job_status("fake-cluster-job") in ("SUCCEEDED", "FAILED", "STOPPED")

        done = _wait(finished, timeout, "the job")
        workers_at_done = worker_nodes()
        peak = max(1, sum(1 for r in seen.get("nodes", {}).values() if r.get("CPU", 0) > 0))
        status = job_status("fake-cluster-job")
        logs = _get("/api/jobs/fake-cluster-job/logs")["logs"]
        down = _wait(lambda: worker_nodes() == 0, timeout, "scale-down")
        workers_after = worker_nodes()  # the cluster still runs: the autoscaler removed them, idle
    finally:
        stop_cluster()
    summary = next((json.loads(line) for line in logs.splitlines() if line.startswith('{"rows"')), None)
    nodes = seen.get("nodes", {})
    cam_nodes = sorted({node for node in seen.get("cam_actors", {}).values()})
    return {"status": status, "summary": summary, "output": str(output), "logs": logs,
            "workers_before": workers_before, "workers_at_peak": peak, "workers_at_done": workers_at_done,
            "workers_after": workers_after,
            "cam_actor_node_gpus": [nodes.get(node, {}).get("GPU", 0) for node in cam_nodes],
            "gpu_nodes_seen": sum(1 for r in nodes.values() if r.get("GPU", 0) > 0),
            "scale_up_s": round(up - submitted, 1), "job_s": round(done - submitted, 1),
            "scale_down_s": round(down - done, 1)}


def stop_cluster(port: int = 6379) -> None:
    """Stop the processes of the Ray cluster whose GCS listens on `port` (`ray stop` stops all; Linux)."""
    def ours() -> list[int]:
        return [pid for pid, cmd in command_lines().items() if pid != os.getpid() and "ray" in cmd and (
                f":{port} " in cmd + " " or f"gcs_server_port={port}" in cmd)]

    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        for pid in ours():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.time() + wait
        while ours() and time.time() < deadline:
            time.sleep(0.5)
    note = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"  # as `ray stop` does
    if note.exists() and note.read_text().strip().endswith(f":{port}"):
        note.unlink()


def _reachable() -> bool:
    try:
        worker_nodes()
        return True
    except OSError:
        return False
