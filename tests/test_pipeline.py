"""End to end on local Ray (2 CPUs): toy world, bad inputs, resume."""

import json

import numpy as np
import pyarrow.dataset as pads
import pytest
import ray

from wsss_ray.masks import decode_png
from wsss_ray.pipeline import OUTPUT_SCHEMA, PipelineConfig, run
from wsss_ray.toyworld import generate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def _table(out):
    return pads.dataset(str(out), format="parquet").to_table()


def test_toy_world_run_schema_rows_and_resume(ray_local, tmp_path):
    manifest = generate(tmp_path / "toy", 12, seed=2_000_000)
    out = tmp_path / "out"
    summary = run(PipelineConfig(input=str(manifest), output=str(out), batch_size=4))
    assert (summary["rows"], summary["ok"], summary["errors"]) == (12, 12, 0)
    t = _table(out)
    assert t.schema.equals(OUTPUT_SCHEMA)
    assert sorted(t.column("id").to_pylist()) == [f"toy{2_000_000 + i:07d}" for i in range(12)]
    row = t.slice(0, 1).to_pylist()[0]
    mask = decode_png(row["mask"])
    assert mask.shape == (row["height"], row["width"]) == (64, 64)
    allowed = {0, 255} | {["boat", "plane", "car", "cow", "bird", "chair", "bottle", "sheep"].index(l) + 1
                          for l in row["labels"]}
    assert set(np.unique(mask)) <= allowed
    again = run(PipelineConfig(input=str(manifest), output=str(out), batch_size=4))
    assert again["rows"] == 0 and again["skipped"] == 12
    assert _table(out).num_rows == 12  # every id exactly once


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
    summary = run(PipelineConfig(input=str(manifest), output=str(tmp_path / "out"), batch_size=3))
    assert (summary["rows"], summary["ok"], summary["errors"]) == (8, 4, 4)
    rows = {(r["id"], r["status"]): r for r in _table(tmp_path / "out").to_pylist()}
    assert "cannot read image" in rows[("corrupt", "error")]["error"]
    assert "cannot read image" in rows[("missing", "error")]["error"]
    assert "unicorn" in rows[("badlabel", "error")]["error"]
    dup_id = json.loads(lines[1])["id"]
    assert "duplicate id" in rows[(dup_id, "error")]["error"] and (dup_id, "ok") in rows
    assert all(r["mask"] is None for r in rows.values() if r["status"] == "error")


def test_mlflow_run_has_params_metrics_and_artifacts(ray_local, tmp_path):
    from mlflow.tracking import MlflowClient

    from wsss_ray.pipeline import run_tracked

    manifest = generate(tmp_path / "toy", 6, seed=2_000_200)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    summary = run_tracked(PipelineConfig(input=str(manifest), output=str(tmp_path / "out"), batch_size=3), uri)
    client = MlflowClient(uri)
    mlrun = client.get_run(summary["mlflow_run_id"])
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.params["model"] == "toyclip" and mlrun.data.params["label.bg_power"] == "1.0"
    assert mlrun.data.metrics["rows"] == 6 and mlrun.data.metrics["ok"] == 6
    assert mlrun.data.metrics["miou"] == pytest.approx(summary["miou"])
    names = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert {"summary.json", "labelset.yaml", "prompts.txt", "overlays.png"} <= names
    assert mlrun.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())
