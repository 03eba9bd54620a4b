"""A tracking server that is down, or goes away mid-run: the run goes on offline, keeps its
record beside the output, and ``python -m wsss_ray.tracking replay`` logs it later, once."""

import json
import sys

import mlflow
import numpy as np
import pytest

from wsss_ray.testing import processes
from wsss_ray.testing.loopback import free_port
from wsss_ray import tracking


def _log_a_job(run) -> None:
    tracking.log_epochs([{"epoch": 0, "loss": 1.5}, {"epoch": 1, "loss": 0.5}])
    tracking.log_summary({"rows": 6, "miou": 0.25, "output": "o"}, exclude={"loss"})
    tracking.log_text("a\nb", "prompts.txt")
    tracking.log_image(np.full((4, 4, 3), 200, np.uint8), "overlays.png")


def test_a_server_that_is_down_leaves_a_record_that_replays_once(tmp_path, capsys, mlflow_uri):
    down = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    with tracking.start_run("pseudolabel", {"model": "toyclip", "post.crf.iters": 10}, down, output=str(out)) as run:
        _log_a_job(run)
    err = capsys.readouterr().err
    assert err.count("warning: MLflow at " + down + " cannot be reached") == 1
    assert f"replay {out}" in err
    record = json.loads((out / "_tracking" / f"{run.info.run_id}.json").read_text())
    assert record["params"] == {"model": "toyclip", "post.crf.iters": 10} and record["mlflow_run_id"] is None
    assert (out / "_tracking" / run.info.run_id / "overlays.png").is_file()

    store = mlflow_uri
    assert tracking.main(["replay", str(out), "--mlflow-uri", store]) == 0
    replayed = json.loads(capsys.readouterr().out)["replayed"]
    assert len(replayed) == 1
    mlflow.set_tracking_uri(store)
    client = mlflow.MlflowClient()
    got = client.get_run(replayed[0])
    assert got.data.params == {"model": "toyclip", "post.crf.iters": "10"}
    assert got.data.metrics == {"rows": 6.0, "miou": 0.25, "loss": 0.5}
    assert [m.value for m in client.get_metric_history(replayed[0], "loss")] == [1.5, 0.5]
    assert got.data.tags["wsss_ray.run_id"] == run.info.run_id and got.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(replayed[0])} == {"summary.json", "prompts.txt", "overlays.png"}
    assert tracking.replay(str(out), store) == []  # a second replay logs nothing twice


def test_while_mlflow_answers_a_run_holds_nothing_it_has_logged(tmp_path, mlflow_uri):
    """Only what could not be logged waits in memory for the record; logged items, images included, are not kept."""
    store = mlflow_uri
    with tracking.start_run("pseudolabel", {"model": "toyclip"}, store, output=str(tmp_path / "out")) as run:
        _log_a_job(run)
        record = tracking._active.record
        assert (record["metrics"], record["dicts"], record["texts"], record["images"]) == ([], {}, {}, {})
    assert not (tmp_path / "out" / "_tracking").exists()
    got = mlflow.MlflowClient(store).get_run(run.info.run_id)
    assert got.data.metrics == {"rows": 6.0, "miou": 0.25, "loss": 0.5}


def test_replay_refuses_while_the_server_is_still_down(tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    with tracking.start_run("train", {"epochs": 2}, down, output=str(tmp_path)) as run:
        _log_a_job(run)
    with pytest.raises(SystemExit) as exit_:
        tracking.main(["replay", str(tmp_path)])
    assert exit_.value.code == 2


@pytest.mark.slow
def test_a_server_that_goes_away_mid_run_is_continued_by_the_replay(tmp_path, capsys, mlflow_uri):
    port = free_port()
    uri, store = f"http://127.0.0.1:{port}", mlflow_uri  # the server's store: made, as a new one is

    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store, "--default-artifact-root",
           str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]

    def serve(log: str):
        return processes.server(cmd, lambda: processes.http_ok(f"{uri}/health", 1), tmp_path / log, "mlflow server")

    with serve("first.log") as first:
        with tracking.start_run("pseudolabel", {"model": "toyclip"}, uri, output=str(tmp_path / "out")) as run:
            assert tracking.log_child_run(run.info.run_id, "trial a", {"x": 1}, {"miou": 0.5}) is not None
            processes.kill_tree(first)
            _log_a_job(run)  # the server went away after the params and the first trial
            assert tracking.log_child_run(run.info.run_id, "trial b", {"x": 2}, {"miou": 0.75}) is None
    assert capsys.readouterr().err.count("cannot be reached") == 1
    assert mlflow.active_run() is None  # ended here too, so the next job in this process starts cleanly
    with serve("second.log"):
        assert tracking.replay(str(tmp_path / "out")) == [run.info.run_id]  # the run it had started, continued
        client = mlflow.MlflowClient(uri)
        got = client.get_run(run.info.run_id)
        assert got.data.params == {"model": "toyclip"} and got.data.metrics["miou"] == 0.25
        assert got.info.status == "FINISHED"
        children = client.search_runs([got.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
        assert sorted(c.info.run_name for c in children) == ["trial a", "trial b"]  # each once


def test_a_job_that_fails_offline_keeps_its_record_marked_failed(tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RuntimeError, match="labelling broke"):
        with tracking.start_run("pseudolabel", {"model": "toyclip"}, down, output=str(tmp_path)) as run:
            tracking.log_metrics({"rows": 3.0})
            raise RuntimeError("labelling broke")
    record = json.loads((tmp_path / "_tracking" / f"{run.info.run_id}.json").read_text())
    assert record["status"] == "FAILED" and record["metrics"] == [{"values": {"rows": 3.0}, "step": None}]
    store = f"sqlite:///{tmp_path / 'later.db'}"
    [replayed] = tracking.replay(str(tmp_path), store)
    assert mlflow.MlflowClient(store).get_run(replayed).info.status == "FAILED"


def test_a_sweeps_trial_runs_are_kept_offline_and_made_under_its_run_by_the_replay(tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    with tracking.start_run("tune", {"num_samples": 2}, down, output=str(tmp_path)) as run:
        assert tracking.is_offline(run)
        assert tracking.log_child_run(run.info.run_id, "trial a", {"post.bg_power": 0.5},
                                      {"miou": 0.25, "note": "not a number"}) is None
        tracking.log_child_run(run.info.run_id, "trial b", {"post.bg_power": 2.0}, {"miou": 0.5}, failed=True)
    store = f"sqlite:///{tmp_path / 'later.db'}"
    [parent] = tracking.replay(str(tmp_path), store)
    client = mlflow.MlflowClient(store)
    children = client.search_runs([client.get_run(parent).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted((c.info.run_name, c.data.params, c.data.metrics, c.info.status) for c in children) == [
        ("trial a", {"post.bg_power": "0.5"}, {"miou": 0.25}, "FINISHED"),
        ("trial b", {"post.bg_power": "2.0"}, {"miou": 0.5}, "FAILED")]
