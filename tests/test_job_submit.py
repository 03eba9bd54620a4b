"""`ray job submit` against a real `ray start --head` on loopback, started and stopped here.

Token auth is off for the cluster and the client alike (Ray 2.60 turns it on by
default), and the venv's bin is first on the PATH that `ray start` sees, because
the job's `python` is resolved there.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from wsss_ray.testing.loopback import free_port
from wsss_ray.testing.processes import http_ok, kill_tree, wait_ready
from wsss_ray.toyworld import generate

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """One head for this module's jobs (starting and stopping one takes about 35 s): (address, env)."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
           "RAY_AUTH_MODE": "disabled", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    gcs, dashboard, agent = free_port(), free_port(), free_port()
    log = open(tmp_path_factory.mktemp("ray-head") / "ray-start.log", "w")
    head = subprocess.Popen(
        [f"{bin_dir}/ray", "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--dashboard-agent-listen-port={agent}",  # the default 52365 may belong to another Ray here
         "--disable-usage-stats"],
        env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        wait_ready(head, lambda: http_ok(f"{address}/api/version", 2), Path(log.name), "ray start --head")
        yield address, env
    finally:
        kill_tree(head)  # the head and everything it started (a graceful stop takes about 35 s; nothing here needs it)
        log.close()
        forget_cluster(gcs)


def forget_cluster(port: int) -> None:
    """Drop `ray start`'s note of the cluster (as `ray stop` does), so a later ray.init() starts its own."""
    note = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    if note.exists() and note.read_text().strip().endswith(f":{port}"):
        note.unlink()


def _submit(address: str, env: dict, job: list[str]) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address,
           "--working-dir", str(REPO), "--", "python", *job]
    for _ in range(30):  # a fresh head's job agent may not be up yet ("please try again later")
        submit = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if "try again later" not in submit.stderr:
            break
        time.sleep(2)
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    assert "succeeded" in submit.stdout
    return submit


def test_ray_job_submit_runs_the_labelling_job_and_a_sweep(ray_head, tmp_path, mlflow_uri):
    address, env = ray_head
    manifest = generate(tmp_path / "toy", 6, seed=2_000_500)
    out = tmp_path / "out"
    uri = mlflow_uri
    submit = _submit(address, env, ["jobs/pseudolabel.py", "--input", str(manifest), "--output", str(out),
                                    "--mlflow-uri", uri, "--batch-size", "3"])
    summary = json.loads(next(line for line in submit.stdout.splitlines() if line.startswith('{"rows"')))
    assert (summary["rows"], summary["ok"], summary["errors"]) == (6, 6, 0)
    assert summary["miou"] is not None and summary["mlflow_run_id"]
    assert pads.dataset(str(out), format="parquet").to_table().num_rows == 6

    (tmp_path / "space.yaml").write_text("post.bg_power: {choice: [0.5, 1.0]}\n")
    sweep = _submit(address, env, ["jobs/tune.py", "--input", str(manifest), "--space", str(tmp_path / "space.yaml"),
                                   "--num-samples", "2", "--output", str(tmp_path / "sweep"), "--mlflow-uri", uri])
    result = json.loads(next(line for line in sweep.stdout.splitlines() if line.startswith('{"kind"')))
    assert result["trials"] == 2 and (tmp_path / "sweep" / "best_config.yaml").is_file()


def test_ray_job_submit_learns_prompts_and_labels_with_semples_and_freeseg(ray_head, tmp_path, mlflow_uri):
    address, env = ray_head
    train = generate(tmp_path / "train", 8, seed=900)
    test = generate(tmp_path / "test", 4, seed=2_000_600)
    uri = mlflow_uri
    prompts = tmp_path / "prompts"
    learned = _submit(address, env, ["jobs/learn_prompts.py", "--input", str(train), "--output", str(prompts),
                                     "--epochs", "2", "--batch-size", "8", "--mlflow-uri", uri])
    summary = json.loads(next(line for line in learned.stdout.splitlines() if line.startswith('{"prompts"')))
    assert summary["epochs"] == 2 and summary["images"] == 8 and (prompts / "prompts.safetensors").is_file()
    for method, extra in (("semples", ["--prompts", str(prompts)]), ("freeseg", [])):
        out = tmp_path / method
        submit = _submit(address, env, ["jobs/pseudolabel.py", "--input", str(test), "--output", str(out),
                                        "--method", method, *extra, "--no-crf", "--mlflow-uri", uri])
        labelled = json.loads(next(line for line in submit.stdout.splitlines() if line.startswith('{"rows"')))
        assert (labelled["rows"], labelled["ok"], labelled["errors"]) == (4, 4, 0), method
        table = pads.dataset(str(out), format="parquet").to_table()
        assert set(table.column("method").to_pylist()) == {method}
