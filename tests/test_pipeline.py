"""End to end on local Ray (2 CPUs): toy world, bad inputs, resume, crashes, MLflow."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
import ray
from PIL import Image

from wsss_ray.testing.processes import kill_tree
from wsss_ray.testing.waits import wait_until
from wsss_ray.testing.loopback import free_port
from wsss_ray.config import CrfConfig, LabelJobConfig, PostConfig
from wsss_ray.masks import decode_png
from wsss_ray.store import OUTPUT_SCHEMA, read_output
from wsss_ray.pipeline import CamStage, run
from wsss_ray.progress import Progress
from wsss_ray.toyworld import generate
from wsss_ray.store import evaluate_output
from wsss_ray.testing.settings import toy_job

pytestmark = pytest.mark.slow


def _table(out):
    return pads.dataset(str(out), format="parquet").to_table()


def test_toy_world_run_schema_rows_and_resume(ray_local, tmp_path):
    manifest = generate(tmp_path / "toy", 12, seed=2_000_000)
    out = tmp_path / "out"
    summary = run(toy_job(input=str(manifest), output=str(out), batch_size=4))
    assert (summary["rows"], summary["ok"], summary["errors"]) == (12, 12, 0)
    t = _table(out)
    assert t.schema.equals(OUTPUT_SCHEMA)
    assert sorted(t.column("id").to_pylist()) == [f"toy{2_000_000 + i:07d}" for i in range(12)]
    row = t.slice(0, 1).to_pylist()[0]
    mask = decode_png(row["mask"])
    assert mask.shape == (row["height"], row["width"]) == (64, 64)
    allowed = {0} | {["boat", "plane", "car", "cow", "bird", "chair", "bottle", "sheep"].index(l) + 1
                          for l in row["labels"]}
    assert set(np.unique(mask)) <= allowed
    assert all(0 <= r["quality"] <= 1 and len(r["label_quality"]) == len(r["labels"]) for r in t.to_pylist())
    # scored as the batches finished; the same as a second pass over the output, which a resumed run makes
    assert summary["miou"] == evaluate_output(str(out), str(manifest), 9, truth=12) > 0
    assert summary["retried_batches"] == 0 and summary["took_over"] == []
    again = run(toy_job(input=str(manifest), output=str(out), batch_size=4))
    assert again["rows"] == 0 and again["skipped"] == 12 and again["miou"] == summary["miou"]
    assert _table(out).num_rows == 12  # every id exactly once
    assert set(t.column("run_id").to_pylist()) == {summary["run_id"]}


def test_the_gpu_layout_hands_its_quality_scores_through_ray_data_to_the_rows(ray_local, tmp_path):
    class RefiningCamStage(CamStage):  # the GPU layout (the CRF and the scores in the actor), forced on the CPU;
        def __init__(self, *args, **kwargs):  # defined in the test, so Ray pickles it by value
            super().__init__(*args, **kwargs)
            self.refine = True

    manifest = generate(tmp_path / "toy", 4, seed=2_000_000)
    config = toy_job(input=str(manifest), output=str(tmp_path / "out"), batch_size=4, precision="fp32")
    assert run(config, cam_stage=RefiningCamStage)["ok"] == 4
    rows = read_output(str(tmp_path / "out"), ["labels", "quality", "label_quality"]).to_pylist()
    assert all(0 <= r["quality"] <= 1 and len(r["label_quality"]) == len(r["labels"]) for r in rows)


def test_bad_items_become_error_rows_and_nothing_is_lost(ray_local, tmp_path):
    manifest = generate(tmp_path / "toy", 4, seed=2_000_100)
    lines = manifest.read_text().splitlines()
    (tmp_path / "toy" / "images" / "corrupt.png").write_bytes(b"not a png")
    extra = [
        {"id": "corrupt", "image": "images/corrupt.png", "labels": ["cow"]},
        {"id": "missing", "image": "images/nope.png", "labels": ["cow"]},
        {"id": "badlabel", "image": json.loads(lines[0])["image"], "labels": ["unicorn"]},
        json.loads(lines[1]),  # duplicate id
    ]
    manifest.write_text("\n".join(lines + [json.dumps(e) for e in extra]) + "\n")
    summary = run(toy_job(input=str(manifest), output=str(tmp_path / "out"), batch_size=3))
    assert (summary["rows"], summary["ok"], summary["errors"]) == (8, 4, 4)
    rows = {(r["id"], r["status"]): r for r in _table(tmp_path / "out").to_pylist()}
    assert "cannot read image" in rows[("corrupt", "error")]["error"]
    assert "cannot read image" in rows[("missing", "error")]["error"]
    assert "unicorn" in rows[("badlabel", "error")]["error"]
    dup_id = json.loads(lines[1])["id"]
    assert "duplicate id" in rows[(dup_id, "error")]["error"] and (dup_id, "ok") in rows
    assert all(r["mask"] is None for r in rows.values() if r["status"] == "error")


def test_mlflow_run_has_params_metrics_and_artifacts(ray_local, tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    from wsss_ray.pipeline import run_tracked

    manifest = generate(tmp_path / "toy", 6, seed=2_000_200)
    uri = mlflow_uri
    summary = run_tracked(toy_job(input=str(manifest), output=str(tmp_path / "out"), batch_size=3), uri)
    client = MlflowClient(uri)
    mlrun = client.get_run(summary["mlflow_run_id"])
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.params["model"] == "toyclip" and mlrun.data.params["post.bg_power"] == "0.5"  # toyclip's own
    assert mlrun.data.params["concurrency"] == "1,1" and mlrun.data.params["post.crf.iters"] == "10"
    assert mlrun.data.params["method"] == "excel" and mlrun.data.params["excel.box_threshold"] == "0.79"
    assert mlrun.data.params["excel.max_side"] == "64" and mlrun.data.params["excel.input_size"] == ""
    assert mlrun.data.metrics["rows"] == 6 and mlrun.data.metrics["ok"] == 6
    assert mlrun.data.metrics["miou"] == pytest.approx(summary["miou"])
    names = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert {"summary.json", "labelset.yaml", "prompts.txt", "overlays.png"} <= names
    assert mlrun.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())
    assert set(_table(tmp_path / "out").column("run_id").to_pylist()) == {summary["mlflow_run_id"]}
    # The overview lies beside the output, not among its rows: six 64 px images, each scaled to 160 px,
    # above their overlays; MLflow keeps the same picture.
    assert summary["overview"] == str(tmp_path / "out-overview.png")
    assert Image.open(summary["overview"]).size == (6 * 160, 2 * 160)
    assert not list((tmp_path / "out").glob("*.png")) and _table(tmp_path / "out").num_rows == 6
    # Where to look: the command that serves this store's UI, and the run's page there.
    assert summary["mlflow_ui"].endswith(f"-m mlflow ui --backend-store-uri {uri} --port 5000")
    assert summary["mlflow_run_url"] == (f"http://127.0.0.1:5000/#/experiments/{mlrun.info.experiment_id}"
                                         f"/runs/{summary['mlflow_run_id']}")


def test_labelling_goes_on_when_mlflow_is_down_and_keeps_its_summary_beside_the_output(ray_local, tmp_path, capsys):
    from wsss_ray import tracking
    from wsss_ray.pipeline import run_tracked

    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    manifest = generate(tmp_path / "toy", 6, seed=2_000_250)
    out = tmp_path / "out"
    summary = run_tracked(toy_job(input=str(manifest), output=str(out), batch_size=3), down)
    assert (summary["rows"], summary["ok"]) == (6, 6) and _table(out).num_rows == 6
    assert capsys.readouterr().err.count(f"MLflow at {down} cannot be reached") == 1
    assert "mlflow_ui" not in summary and "mlflow_run_url" not in summary  # no run in MLflow to show
    record = json.loads((out / "_tracking" / f"{summary['mlflow_run_id']}.json").read_text())
    assert record["dicts"]["summary.json"]["rows"] == 6 and record["params"]["model"] == "toyclip"
    assert set(_table(out).column("run_id").to_pylist()) == {summary["mlflow_run_id"]} == {record["run_id"]}
    store = f"sqlite:///{tmp_path / 'later.db'}"
    [replayed] = tracking.replay(str(out), store)
    from mlflow.tracking import MlflowClient

    assert MlflowClient(store).get_run(replayed).data.metrics["rows"] == 6


def test_a_crashed_cam_actor_is_restarted_and_no_row_is_lost(ray_local, tmp_path):
    marker = tmp_path / "crashed"

    class CrashOnce(CamStage):  # defined here so Ray pickles it by value
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            cams = self.labeler.cam_tensors

            def crash_once(*a, **k):
                if not marker.exists():
                    marker.touch()
                    os._exit(1)  # the actor process dies mid-batch, as on an OOM kill
                return cams(*a, **k)

            self.labeler.cam_tensors = crash_once

    manifest = generate(tmp_path / "toy", 6, seed=2_000_300)
    summary = run(toy_job(input=str(manifest), output=str(tmp_path / "out"), batch_size=3),
                  cam_stage=CrashOnce)
    assert marker.exists()
    assert (summary["rows"], summary["ok"], summary["errors"]) == (6, 6, 0)
    assert summary["retried_batches"] == 1  # the batch the actor died in, run again on its restart
    assert sorted(_table(tmp_path / "out").column("id").to_pylist()) == [f"toy{2_000_300 + i:07d}" for i in range(6)]


def test_a_large_photo_and_an_image_whose_labelling_raises_cost_nothing_but_that_row(ray_local, tmp_path):
    """One batch: toy images, a 12-megapixel photo of one of them, and an image whose labelling
    raises as an out-of-memory error would; only the last becomes an error row."""
    from PIL import Image

    from wsss_ray.config import resolve_label_job
    from wsss_ray.labeler import Labeler
    from wsss_ray.store import read_manifest

    class OutOfMemoryOnOneImage(CamStage):  # defined here so Ray pickles it by value
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            cams = self.labeler.method.cam_tensors

            def cams_or_out_of_memory(images, class_ids):
                if any(image.shape[:2] == (41, 50) for image in images):
                    raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                                       "89466192008 bytes. Error code 12 (Cannot allocate memory)")
                return cams(images, class_ids)

            self.labeler.method.cam_tensors = cams_or_out_of_memory

    manifest = generate(tmp_path / "toy", 4, seed=2_000_500)
    items = read_manifest(str(manifest))
    Image.open(items[0].image).resize((4000, 3000), Image.BICUBIC).save(tmp_path / "large.jpg", quality=90)
    Image.fromarray(np.zeros((41, 50, 3), np.uint8)).save(tmp_path / "odd.png")
    with open(manifest, "a") as f:
        entry = {"id": "large", "image": str(tmp_path / "large.jpg"), "labels": list(items[0].labels)}
        f.write(json.dumps(entry) + "\n")
        f.write(json.dumps({"id": "odd", "image": str(tmp_path / "odd.png"), "labels": ["cow"]}) + "\n")
    config = resolve_label_job({"input": str(manifest), "output": str(tmp_path / "out"), "batch_size": 6})
    summary = run(config, cam_stage=OutOfMemoryOnOneImage)  # toyclip's own settings, as the job runs them
    assert (summary["rows"], summary["ok"], summary["errors"]) == (6, 5, 1)
    rows = {r["id"]: r for r in _table(tmp_path / "out").to_pylist()}
    assert rows["odd"]["error"] == ("labelling failed: RuntimeError: DefaultCPUAllocator: can't allocate memory: "
                                    "you tried to allocate 89466192008 bytes. Error code 12 (Cannot allocate memory)")
    large = decode_png(rows["large"]["mask"])
    assert large.shape == (3000, 4000) and (rows["large"]["height"], rows["large"]["width"]) == (3000, 4000)
    assert decode_png(rows["large"]["confidence"]).shape == (3000, 4000)
    # the same picture at 64x64 and at 12 megapixels gets about the same mask
    small = np.asarray(Image.fromarray(decode_png(rows[items[0].id]["mask"])).resize((4000, 3000), Image.NEAREST))
    assert (small == large).mean() > 0.9
    # the rest of the batch is labelled as the labeller labels each image alone
    labeler = Labeler.from_spec()
    for it in items:
        alone = labeler.label([np.asarray(Image.open(it.image).convert("RGB"))], [list(it.labels)])[0]
        assert (decode_png(rows[it.id]["mask"]) == alone.mask).mean() > 0.99


def test_killed_job_resumes_with_every_id_exactly_once(tmp_path, mlflow_uri, ray_env):
    """A driver killed with its local Ray mid-run (its CAM actor stalled after 3 batches, so the
    kill lands part-way on any machine); the job run again writes the rest, each id once."""
    n = 24
    manifest = generate(tmp_path / "toy", n, seed=2_000_400)
    out = tmp_path / "out"
    (tmp_path / "small.yaml").write_text("rows_per_file: 2\nbatch_size: 2\nclip_es: {scales: [1.0]}\n")
    first = f"""
import ray
from wsss_ray.config import resolve_label_job
from wsss_ray.pipeline import run
from wsss_ray.testing.gates import stalling_cam_stage
ray.init(address="local", num_cpus=2, include_dashboard=False)
run(resolve_label_job({{"input": {str(manifest)!r}, "output": {str(out)!r}, "concurrency": 1}},
                      {str(tmp_path / "small.yaml")!r}), cam_stage=stalling_cam_stage(3))
"""
    proc = subprocess.Popen([sys.executable, "-c", first], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while len(_ids(out)) < 4 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
    finally:
        kill_tree(proc)  # the driver and the local Ray it started, mid-write
    before = _ids(out)
    assert 4 <= len(before) <= 6  # at most the 3 batches of up to 2 rows the actor labelled
    job = [sys.executable, str(Path(__file__).parents[1] / "jobs" / "pseudolabel.py"), "--input", str(manifest),
           "--output", str(out), "--config", str(tmp_path / "small.yaml"),
           "--mlflow-uri", mlflow_uri]
    env = ray_env  # the run again: a driver that joins the session's Ray
    (out / ".part-stale.parquet.tmp-0123abcd").write_bytes(b"half a file")  # what a kill mid-write leaves
    result = subprocess.run(job, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["skipped"] == len(before) and summary["rows"] == n - len(before)
    ids = _table(out).column("id").to_pylist()
    assert sorted(ids) == [f"toy{2_000_400 + i:07d}" for i in range(n)]  # each id exactly once
    assert not (out / ".part-stale.parquet.tmp-0123abcd").exists()


def _ids(out) -> set[str]:
    table = read_output(str(out), ["id"])
    return set() if table is None else set(table.column("id").to_pylist())


def test_progress_counts_rows_as_they_leave_the_last_stage(ray_local):
    from wsss_ray.progress import RowCounter, count_rows

    counter = RowCounter.remote()
    progress = Progress(counter, partitions=2)
    assert progress.line().startswith("[pseudolabel] 0 rows, ") and "(0/2 input partitions, 0 rows so far)" in progress.line()
    counter.add_pending.remote(6, 1, 0)      # the resume step's first partition: 6 rows to do, 1 written
    count_rows(counter, 3)                   # a batch of 3 rows finished, long before any file is written
    wait_until(lambda: "(1/2 input partitions, 6 rows so far)" in progress.line())
    assert progress.line().startswith("[pseudolabel] 3 rows, ")
    counter.add_pending.remote(4, 0, 0)      # the last partition: the total is known
    wait_until(lambda: "/10 rows" in progress.line())
    line = progress.line()
    assert line.startswith("[pseudolabel] 3/10 rows (30%), ") and "rows/s, ETA " in line
    count_rows(counter, 9)                   # a retried batch counted twice never shows more than the total
    wait_until(lambda: "10/10 rows" in progress.line())
    assert progress.line().startswith("[pseudolabel] 10/10 rows (100%)")
    assert ray.get(counter.counts.remote()) == {"done": 12, "pending": 10, "skipped": 1, "truth": 0, "partitions": 2,
                                                "started": {}}
    count_rows(None, 5)                      # stages run without a counter (tests, notebooks) count nothing


def test_progress_says_what_the_job_does_before_its_first_row(ray_local):
    from wsss_ray.progress import RowCounter, count_attempt

    counter = RowCounter.remote()
    progress = Progress(counter, partitions=1)
    counter.add_pending.remote(2, 0, 0)
    wait_until(lambda: "0/2 rows" in progress.line())
    assert progress.line() == ("[pseudolabel] 0/2 rows; reading and decoding the first images, starting the "
                               "actors (they load the model)")
    count_attempt(counter, "cam", ["a", "b"])
    assert progress.line() == ("[pseudolabel] 0/2 rows; working on the first batches (1 in the cam stage); "
                               "none finished yet")


def test_the_last_stage_counts_each_batch_as_it_finishes_it(ray_local, tmp_path):
    """The CRF stage reports its batch's rows, and the confusion of those with ground truth,
    before any Parquet file is written."""
    from wsss_ray.masks import encode_png
    from wsss_ray.pipeline import crf_stage
    from wsss_ray.progress import RowCounter
    from wsss_ray.stages import objects

    counter = RowCounter.remote()
    image = np.zeros((4, 5, 3), np.uint8)
    probs = np.stack([np.full((4, 5), 0.3), np.full((4, 5), 0.7)]).astype(np.float16)
    batch = {"id": np.array(["a", "b"], dtype=object), "image": np.array(["a.png", "b.png"], dtype=object),
             "labels": objects([["cow"], ["cow"]]), "status": np.array(["ok", "ok"], dtype=object),
             "error": np.array([None, None], dtype=object), "pixels": objects([image, image]),
             "height": np.array([4, 4], np.int32), "width": np.array([5, 5], np.int32),
             "probs": objects([probs, probs])}
    truth = np.zeros((4, 5), np.uint8)
    truth[:, :2] = 4                                              # cow on 8 pixels, background on 12
    (tmp_path / "a.png").write_bytes(encode_png(truth))
    batch["mask"] = np.array([str(tmp_path / "a.png"), None], dtype=object)  # only "a" has ground truth
    config = LabelJobConfig(input="x", post=PostConfig(crf=CrfConfig(iters=0)))
    table = crf_stage(batch, config, "run", counter)
    assert table.num_rows == 2 and table.column("status").to_pylist() == ["ok", "ok"]
    assert decode_png(table.column("mask")[0].as_py()).max() == 4   # cow (index 3) + 1 wins everywhere
    wait_until(lambda: ray.get(counter.counts.remote())["done"] == 2)
    assert ray.get(counter.counts.remote())["done"] == 2
    confusion, scored = ray.get(counter.scores.remote())
    expected = np.zeros((9, 9), np.int64)
    expected[0, 4], expected[4, 4] = 12, 8                        # rows: truth, columns: prediction
    assert scored == 1 and np.array_equal(confusion, expected)


def test_an_input_that_kills_every_actor_fails_the_job_naming_it_instead_of_hanging(ray_local, tmp_path):
    """Actor restarts are bounded (task retries are not, so a lost node's actor can come back); a retried
    batch is labelled one image at a time, so the job names the image the actor dies on."""
    from PIL import Image

    from wsss_ray.errors import JobError

    class Poison(CamStage):  # defined here so Ray pickles it by value
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            cams = self.labeler.method.cam_tensors

            def cams_or_die(images, class_ids):
                if any(image.shape[:2] == (41, 50) for image in images):
                    os._exit(1)  # as the system's OOM killer would end it
                return cams(images, class_ids)

            self.labeler.method.cam_tensors = cams_or_die

    manifest = generate(tmp_path / "toy", 5, seed=2_000_300)
    Image.fromarray(np.zeros((41, 50, 3), np.uint8)).save(tmp_path / "poison.png")
    with open(manifest, "a") as f:
        f.write(json.dumps({"id": "poison", "image": str(tmp_path / "poison.png"), "labels": ["cow"]}) + "\n")
    with pytest.raises(JobError, match="^item 'poison' ends the cam stage's process each time it takes it"):
        run(toy_job(input=str(manifest), output=str(tmp_path / "out"), batch_size=3), cam_stage=Poison)
