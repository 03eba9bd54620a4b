"""MLflow conventions: the only module that imports mlflow.

One run per job, in the experiment named after the job (``pseudolabel``, ``train``,
``tune``; a sweep's trials are child runs of its run). Every setting is a param,
under its dotted name (``clip_es.caa``, ``post.crf.bilateral_sxy``). Throughput, counts and mIoU are
metrics. The resolved labelset, prompts, summary and an overlay grid are artifacts.

The tracking URI is always explicit. The default is a sqlite store under
``outputs/``, given as an absolute URI, because MLflow 3 refuses the bare
``./mlruns`` file store and would resolve relative paths against the process's
working directory.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import mlflow
import numpy as np

from wsss_ray.config import flatten

__all__ = ["flatten", "log_child_run", "log_epochs", "log_image", "log_segmentation_model", "log_summary", "log_text",
           "start_run"]

DEFAULT_STORE = "outputs/mlflow.db"


def default_uri() -> str:
    path = Path(DEFAULT_STORE).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _artifact_root(uri: str) -> str | None:
    """Artifacts of a local sqlite store go beside the database file (not into the cwd)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").absolute().as_uri()
    return None  # a tracking server decides


def _param_values(params: dict) -> dict:
    return {k: ("" if v is None else v) for k, v in params.items()}


@contextlib.contextmanager
def start_run(experiment: str, params: dict, uri: str | None = None, run_name: str | None = None,
              run_id: str | None = None):
    """Open an MLflow run in `experiment` (created if missing) with `params` logged; yields the run.

    With `run_id`, reopen that run (a resumed sweep) instead of starting a new one.
    """
    uri = uri or default_uri()
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=_artifact_root(uri))
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name, run_id=run_id) as run:
        if run_id is None:
            mlflow.log_params(_param_values(params))
        yield run


def log_child_run(parent_run_id: str, name: str, params: dict, metrics: dict, failed: bool = False) -> str:
    """A finished run nested under `parent_run_id` (one per sweep trial): params, metrics; returns its id."""
    from mlflow.entities import Metric, Param

    client = mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    run = client.create_run(parent.info.experiment_id, run_name=name, tags={"mlflow.parentRunId": parent_run_id})
    now = int(time.time() * 1000)
    client.log_batch(run.info.run_id,
                     params=[Param(k, str(v)) for k, v in _param_values(params).items()],
                     metrics=[Metric(k, v, now, 0) for k, v in _numbers(metrics).items()])
    client.set_terminated(run.info.run_id, "FAILED" if failed else "FINISHED")
    return run.info.run_id


def _numbers(d: dict, exclude: set[str] | frozenset[str] = frozenset()) -> dict[str, float]:
    """The numeric entries of `d` (not bools, not None, not the keys in `exclude`) as floats."""
    return {k: float(v) for k, v in d.items()
            if k not in exclude and isinstance(v, (int, float)) and not isinstance(v, bool)}


def log_summary(summary: dict, exclude: set[str] | frozenset[str] = frozenset()) -> None:
    """Numbers of the summary as metrics (but not the keys in `exclude`, e.g. ones logged per epoch),
    the whole summary as ``summary.json``."""
    mlflow.log_metrics(_numbers(summary, exclude))
    mlflow.log_dict(summary, "summary.json")


def log_text(text: str, name: str) -> None:
    mlflow.log_text(text, name)


def log_image(image: np.ndarray, name: str) -> None:
    mlflow.log_image(image, name)


def log_epochs(history: list[dict], step_key: str = "epoch") -> None:
    """Per-epoch metrics (every numeric value of each entry) with step = the entry's epoch."""
    for entry in history:
        step = int(entry[step_key])
        mlflow.log_metrics(_numbers(entry, {step_key}), step=step)


def log_segmentation_model(model, checkpoint: str) -> None:
    """The model as an MLflow PyTorch model under ``model/`` plus the checkpoint file itself."""
    import mlflow.pytorch

    mlflow.pytorch.log_model(model, name="model", serialization_format="pickle",
                             pip_requirements=["torch", "torchvision"])
    mlflow.log_artifact(checkpoint, "checkpoint")


def log_file(path: str, folder: str | None = None) -> None:
    """A file (local path or URI) as an artifact under `folder`."""
    from wsss_ray.files import local_file

    mlflow.log_artifact(local_file(path), folder)
