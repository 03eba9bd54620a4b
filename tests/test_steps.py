"""What a job and the set-up scripts say while they work: a line per step, never silent for long."""

import io
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss_ray.cli import step
from wsss_ray.masks import encode_png
from wsss_ray.store import overview_path, parquet_files, write_overview
from wsss_ray.testing.outputs import toy_output
from wsss_ray.testing.waits import wait_until

ROOT = Path(__file__).resolve().parent.parent


def test_a_step_says_it_starts_reminds_while_it_lasts_and_stops_reminding_when_done():
    out = io.StringIO()
    with step("job", "loading the model", every=0.05, stream=out):
        wait_until(lambda: out.getvalue().count("still") >= 2, timeout=10)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[job] loading the model ..."
    assert all(line.startswith("[job]   still loading the model (") and line.endswith(" s)") for line in lines[1:-1])
    assert lines[-1].startswith("[job] loading the model: done in ") and lines[-1].endswith(" s")
    said = out.getvalue()
    threading.Event().wait(0.2)  # four reminder periods later
    assert out.getvalue() == said


def test_a_failing_step_says_no_done_and_lets_the_error_through():
    out = io.StringIO()
    with pytest.raises(KeyError), step("job", "reading", every=10, stream=out):
        raise KeyError("x")
    assert out.getvalue() == "[job] reading ...\n"


def _bash_step(command: str) -> subprocess.CompletedProcess:
    script = f"source scripts/pinned-venv.sh; STEP_EVERY=1; {command}"
    return subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_the_setup_scripts_step_reminds_every_period_and_gives_its_time():
    done = _bash_step('step setup "waiting" sleep 2.5')
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert lines[0] == "[setup] waiting ..."
    assert lines[1:-1] and all(line.startswith("[setup]   still waiting (") for line in lines[1:-1])
    assert lines[-1] in ("[setup] waiting: done in 2 s", "[setup] waiting: done in 3 s")


def test_the_setup_scripts_step_fails_with_the_commands_status_and_says_so():
    done = _bash_step('step setup "breaking" bash -c "exit 3"; echo "status $?"')
    assert done.stdout.splitlines() == ["[setup] breaking ...", "status 3"]
    assert done.stderr.startswith("[setup] breaking failed (exit 3, after ")


def test_the_overview_lies_beside_the_output_and_shows_the_first_masks_over_their_images(tmp_path):
    masks = {f"m{i}": np.full((20, 40), i % 3, np.uint8) for i in range(10)}
    out = toy_output(tmp_path / "out", masks, status={"m1": "error"})
    path = write_overview(str(out), n=4, height=30)
    assert path == overview_path(str(out)) == str(tmp_path / "out-overview.png")
    grid = np.asarray(Image.open(path))
    # Four ok rows (m0, m2, m3, m4: the error row is skipped), each 60 px wide at 30 px high, its
    # black image above its overlay: m0 and m3 background (black), m2 class 2 and m4 class 1 at half
    # their palette colours (0, 128, 0) and (128, 0, 0).
    assert grid.shape == (60, 4 * 60, 3)
    assert not grid[:30].any() and not grid[30:, :60].any() and not grid[30:, 120:180].any()
    assert (grid[30:, 60:120] == (0, 64, 0)).all() and (grid[30:, 180:240] == (64, 0, 0)).all()
    assert parquet_files(str(out))[1] == [str(out / "part-0.parquet")]


def test_an_output_with_no_ok_row_has_no_overview(tmp_path):
    out = toy_output(tmp_path / "out", {"a": np.zeros((4, 4), np.uint8)}, status={"a": "error"})
    assert write_overview(str(out)) is None and not Path(overview_path(str(out))).exists()


def test_the_overview_path_of_an_object_store_output_is_its_sibling():
    assert overview_path("s3://bucket/runs/labels/") == "s3://bucket/runs/labels-overview.png"


def test_the_ui_pointer_names_the_command_for_a_local_store_and_the_page_for_a_server(monkeypatch):
    from types import SimpleNamespace

    from wsss_ray import tracking

    run = SimpleNamespace(info=SimpleNamespace(experiment_id="3", run_id="abc"))
    local = tracking.ui_pointer("sqlite:////data/mlflow.db", run)
    assert local["mlflow_ui"].endswith(" -m mlflow ui --backend-store-uri sqlite:////data/mlflow.db --port 5000")
    assert local["mlflow_run_url"] == "http://127.0.0.1:5000/#/experiments/3/runs/abc"
    assert tracking.ui_pointer("http://mlflow.internal:5000/", run) == {
        "mlflow_run_url": "http://mlflow.internal:5000/#/experiments/3/runs/abc"}
    # Under Ray Jobs the job's working folder may be gone when it ends: the interpreter's full path.
    monkeypatch.setattr(Path, "cwd", classmethod(lambda cls: (_ for _ in ()).throw(FileNotFoundError(2, "gone"))))
    import sys

    assert tracking.ui_pointer("sqlite:////data/mlflow.db", run)["mlflow_ui"].startswith(f"{sys.executable} -m")


def test_an_overview_that_cannot_be_written_costs_the_job_one_line_not_its_run(monkeypatch, tmp_path, capsys):
    import wsss_ray.pipeline as pipeline

    def read_only(output):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pipeline, "write_overview", read_only)
    assert pipeline.overview(str(tmp_path / "out")) is None
    err = capsys.readouterr().err
    assert f"[pseudolabel] no overview: {tmp_path / 'out-overview.png'} could not be written" in err
    assert err.splitlines()[-1].startswith(f"[pseudolabel] drawing the first masks over their images into "
                                           f"{tmp_path / 'out-overview.png'}: done in ")
