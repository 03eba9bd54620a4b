"""A new CAM method is one module plus one registry line.

This module is that module: a settings dataclass and a CamMethod whose CAMs are a
centred disc. The only other change is one line, ``METHODS["centre-disc"] =
Method(CentreDiscConfig, CentreDisc)`` (made with monkeypatch), and the method then
runs through the labelling job end to end: flag, --help, --config section, Ray actors,
Parquet, MLflow.
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from ray import cloudpickle

from wsss_ray.cam import CamMethod
from wsss_ray.config import METHODS, Method
from wsss_ray.masks import decode_png
from wsss_ray.toyworld import CLASSES, generate


@dataclass(frozen=True)
class CentreDiscConfig:
    radius: float = 0.5      # of half the shorter side

    def __post_init__(self):
        if not 0 < self.radius <= 1:
            raise ValueError(f"centre_disc.radius must lie in (0, 1], got {self.radius}")


class CentreDisc(CamMethod):
    """Every class's CAM is 1 inside a centred disc and 0 outside."""

    config_class = CentreDiscConfig

    def cams(self, images, class_ids):
        out = []
        for image, ids in zip(images, class_ids):
            out.append(np.repeat(_disc(*image.shape[:2], self.config.radius)[None], len(ids), axis=0))
        return out


def _disc(h: int, w: int, radius: float) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    r = radius * min(h, w) / 2
    return (((y - (h - 1) / 2) ** 2 + (x - (w - 1) / 2) ** 2) <= r * r).astype(np.float32)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(METHODS, "centre-disc", Method(CentreDiscConfig, CentreDisc))
    # Ray workers cannot import a test module; a method in a user's package or working_dir needs no such line.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _job():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pseudolabel_job", Path(__file__).parents[1] / "jobs" / "pseudolabel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unregistered_method_is_a_clear_error_listing_the_choices(capsys):
    with pytest.raises(SystemExit):
        _job().parse(["--input", "a.jsonl", "--method", "centre-disc"])
    assert "unknown method 'centre-disc'; choose from 'clip-es', 'excel', 'freeseg', 'semples'" in capsys.readouterr().err


def test_a_registered_method_is_listed_in_the_jobs_help(registered, capsys):
    with pytest.raises(SystemExit):
        _job().parse(["--help"])
    assert "centre-disc, clip-es, excel, freeseg, semples" in " ".join(capsys.readouterr().out.split())


def test_a_registered_method_is_settable_and_validated(registered, tmp_path):
    from wsss_ray.config import params, resolve_label_job

    config = resolve_label_job({"input": "a", "method": "centre-disc", "centre_disc": {"radius": 0.25}})
    assert config.method_config == CentreDiscConfig(radius=0.25)
    assert params(config)["centre_disc.radius"] == 0.25 and "clip_es.caa" not in params(config)
    with pytest.raises(ValueError, match="centre_disc.radius must lie in"):
        resolve_label_job({"input": "a", "method": "centre-disc", "centre_disc": {"radius": 2}})
    with pytest.raises(ValueError, match="unknown centre_disc settings \\['size'\\]"):
        resolve_label_job({"input": "a", "method": "centre-disc", "centre_disc": {"size": 2}})


@pytest.mark.slow
def test_a_registered_method_runs_through_the_job_end_to_end(registered, tmp_path, capsys, mlflow_uri):
    from mlflow.tracking import MlflowClient

    manifest = generate(tmp_path / "toy", 5, seed=2_000_700)
    (tmp_path / "run.yaml").write_text("centre_disc: {radius: 0.5}\nbatch_size: 2\n")
    uri = mlflow_uri
    job = _job()
    assert job.main(["--input", str(manifest), "--output", str(tmp_path / "out"), "--method", "centre-disc",
                     "--config", str(tmp_path / "run.yaml"), "--no-crf", "--mlflow-uri", uri]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["rows"], summary["ok"], summary["errors"]) == (5, 5, 0)

    from wsss_ray.store import read_output

    rows = read_output(str(tmp_path / "out")).to_pylist()
    assert {r["method"] for r in rows} == {"centre-disc"}
    for row in rows:
        mask = decode_png(row["mask"])
        first = CLASSES.index(row["labels"][0]) + 1  # every CAM is the same disc: argmax picks the first class
        expected = np.where(_disc(*mask.shape, 0.5) > 0, first, 0)
        assert np.array_equal(mask, expected)
    params = MlflowClient(uri).get_run(summary["mlflow_run_id"]).data.params
    assert params["method"] == "centre-disc" and params["centre_disc.radius"] == "0.5"
