"""MLflow conventions: the only module that imports mlflow.

One run per job, in the experiment named after the job (``pseudolabel``, ``train``,
``tune``; a sweep's trials are child runs of its run). Every setting is a param,
under its dotted name (``clip_es.caa``, ``post.crf.bilateral_sxy``). Throughput, counts and mIoU are
metrics. The resolved labelset, prompts, summary and an overlay grid are artifacts.

The tracking URI is always explicit. The default is a sqlite store under
``outputs/``, given as an absolute URI, because MLflow 3 refuses the bare
``./mlruns`` file store and would resolve relative paths against the process's
working directory.

Tracking is never the product. When the tracking server cannot be reached at the
start, or stops answering during a run, the job goes on: it warns once, keeps what
it could not log in a record beside its output (``OUTPUT/_tracking/RUN_ID.json``,
images beside it; a sweep's trial runs too), and ``python -m wsss_ray.tracking replay OUTPUT`` logs that
record into MLflow later, once (a replayed record says where it went).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable

import mlflow
import numpy as np

from wsss_ray.cli import step
from wsss_ray.config import flatten

__all__ = ["flatten", "is_offline", "log_child_run", "log_epochs", "log_file", "log_image", "log_metrics",
           "log_segmentation_model", "log_summary", "log_text", "reachable", "replay", "start_run"]

DEFAULT_STORE = "outputs/mlflow.db"
UI_PORT = 5000  # mlflow ui's own default


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


RECORDS = "_tracking"  # under a job's output: runs kept while the tracking server was unreachable


def records_folder(output: str) -> str:
    """Where the runs kept while MLflow was unreachable lie: ``OUTPUT/_tracking``."""
    return f"{output.rstrip('/')}/{RECORDS}"


_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


class _Run:
    """What the jobs need of a run (``run.info.run_id``) when MLflow is not there."""

    def __init__(self, run_id: str):
        self.info = type("RunInfo", (), {"run_id": run_id})()


class _Tracker:
    """The active run: logs to MLflow while it answers, and records what it could not log, so
    that the record can be kept beside the output once it stops answering."""

    def __init__(self, experiment: str, params: dict, uri: str, run_name: str | None, output: str | None, tag: str):
        self.uri, self.output, self.tag = uri, output, tag
        self.record = {"experiment": experiment, "uri": uri, "run_name": run_name, "params": _param_values(params),
                       "metrics": [], "dicts": {}, "texts": {}, "images": {}, "files": [], "models": [], "children": [],
                       "mlflow_run_id": None, "run_id": None, "unreachable": None}
        self.online = True

    def fail(self, error: BaseException) -> None:
        """Go offline for the rest of the run, with one warning."""
        if self.online:
            self.online = False
            self.record["unreachable"] = f"{type(error).__name__}: {error}"[:500]
            where = records_folder(self.output or ".")
            print(f"[{self.tag}] warning: MLflow at {self.uri} cannot be reached ({type(error).__name__}); the job "
                  f"goes on and keeps its tracking record under {where}; once the server is back, run: python -m "
                  f"wsss_ray.tracking replay {self.output or '.'}", file=sys.stderr, flush=True)

    def call(self, log: Callable[[], Any], record: Callable[[dict], None]) -> None:
        """Log to MLflow; what could not be logged (the server gone, now or before) goes into the record."""
        if self.online:
            try:
                log()
                return
            except Exception as e:  # noqa: BLE001 - any failure of the tracking server is the same for a job
                self.fail(e)
        record(self.record)

    def keep(self) -> str | None:
        """Write the record beside the output when the run went offline; returns its path."""
        if self.online:
            return None
        from wsss_ray.store import atomic_write

        folder = records_folder(self.output or ".")
        for name, image in list(self.record["images"].items()):
            if isinstance(image, np.ndarray):
                from PIL import Image

                png = io.BytesIO()
                Image.fromarray(image).save(png, format="PNG")
                self.record["images"][name] = atomic_write(f"{folder}/{self.record['run_id']}/{name}", png.getvalue())
        path = f"{folder}/{self.record['run_id']}.json"
        return atomic_write(path, json.dumps(self.record, indent=1, default=str).encode())


_active: _Tracker | None = None


def reachable(uri: str, timeout: float = 5.0) -> Exception | None:
    """None when the tracking URI answers (always, for local stores), else the error met."""
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return None
    except (OSError, ValueError) as e:  # urllib's URLError and HTTPError are OSErrors
        return e


@contextlib.contextmanager
def start_run(experiment: str, params: dict, uri: str | None = None, run_name: str | None = None,
              run_id: str | None = None, output: str | None = None, tag: str | None = None):
    """Open an MLflow run in `experiment` (created if missing) with `params` logged; yields the run.

    With `run_id`, reopen that run (a resumed sweep) instead of starting a new one. When
    the server cannot be reached (now or later in the run), the run goes on offline and
    its record is kept under `output` (see the module); `tag` names the job in the warning.
    """
    global _active
    uri = uri or default_uri()
    if uri.startswith(("http://", "https://")):
        for k, v in _HTTP_DEFAULTS.items():  # MLflow's own default retries for minutes
            os.environ.setdefault(k, v)
    tracker = _Tracker(experiment, params, uri, run_name, output, tag or experiment)
    run = None
    with step(tag or experiment, f"opening an MLflow run in {uri}"):  # a new local store takes seconds
        down = reachable(uri)
        if down is not None:
            tracker.fail(down)
        else:
            try:
                mlflow.set_tracking_uri(uri)
                if mlflow.get_experiment_by_name(experiment) is None:
                    mlflow.create_experiment(experiment, artifact_location=_artifact_root(uri))
                mlflow.set_experiment(experiment)
                run = mlflow.start_run(run_name=run_name, run_id=run_id)
                tracker.record["mlflow_run_id"] = run.info.run_id
                if run_id is None:
                    mlflow.log_params(_param_values(params))
            except Exception as e:  # noqa: BLE001
                tracker.fail(e)
    tracker.record["run_id"] = run.info.run_id if run is not None else uuid.uuid4().hex
    _active = tracker
    status = "FAILED"
    try:
        yield run if run is not None else _Run(tracker.record["run_id"])
        status = "FINISHED"
    finally:
        _active = None
        if run is not None:  # always: end_run also takes the run off MLflow's stack of active runs
            try:
                mlflow.end_run(status)
            except Exception as e:  # noqa: BLE001
                tracker.fail(e)
        tracker.record["status"] = status
        tracker.keep()  # a failed job's record too: what it had logged, marked FAILED


def ui_pointer(uri: str, run) -> dict[str, str]:
    """Where to see `run` in MLflow's UI: ``mlflow_run_url``, and for a local store the
    ``mlflow_ui`` command that serves it (a tracking server serves its own UI)."""
    if is_offline(run):
        return {}
    experiment = run.info.experiment_id
    if uri.startswith(("http://", "https://")):
        return {"mlflow_run_url": f"{uri.rstrip('/')}/#/experiments/{experiment}/runs/{run.info.run_id}"}
    python = Path(sys.executable)
    # The checkout's own virtualenv, said relative to where the job ran (a Ray Jobs working folder
    # may be gone by the end of the job: then the full path).
    with contextlib.suppress(ValueError, OSError):
        python = python.relative_to(Path.cwd())
    return {"mlflow_ui": f"{python} -m mlflow ui --backend-store-uri {uri} --port {UI_PORT}",
            "mlflow_run_url": f"http://127.0.0.1:{UI_PORT}/#/experiments/{experiment}/runs/{run.info.run_id}"}


def _log(record: Callable[[dict], None], log: Callable[[], Any]) -> None:
    """Log an item to MLflow while it answers, else keep it in the active run's record (so memory
    holds only what is waiting for the replay)."""
    if _active is None:
        log()
        return
    _active.call(log, record)


def log_child_run(parent_run_id: str, name: str, params: dict, metrics: dict, failed: bool = False) -> str | None:
    """A finished run nested under `parent_run_id` (one per sweep trial): params, metrics.

    Returns its MLflow id, or None when the parent run is offline; then the child is kept
    in the parent's record and made by the replay.
    """
    child = {"name": name, "params": _param_values(params), "metrics": _numbers(metrics), "failed": failed,
             "mlflow_run_id": None}

    def log() -> None:
        child["mlflow_run_id"] = _create_child(mlflow.MlflowClient(), parent_run_id, child)

    _log(lambda r: r["children"].append(child), log)
    return child["mlflow_run_id"]


def _create_child(client, parent_run_id: str, child: dict) -> str:
    from mlflow.entities import Metric, Param

    parent = client.get_run(parent_run_id)
    run = client.create_run(parent.info.experiment_id, run_name=child["name"],
                            tags={"mlflow.parentRunId": parent_run_id})
    now = int(time.time() * 1000)
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in child["params"].items()],
                     metrics=[Metric(k, v, now, 0) for k, v in child["metrics"].items()])
    client.set_terminated(run.info.run_id, "FAILED" if child["failed"] else "FINISHED")
    return run.info.run_id


def is_offline(run) -> bool:
    """Whether `run` (from `start_run`) stands in for an MLflow run that could not be started."""
    return isinstance(run, _Run)


def _numbers(d: dict, exclude: set[str] | frozenset[str] = frozenset()) -> dict[str, float]:
    """The numeric entries of `d` (not bools, not None, not the keys in `exclude`) as floats."""
    return {k: float(v) for k, v in d.items()
            if k not in exclude and isinstance(v, (int, float)) and not isinstance(v, bool)}


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    _log(lambda r: r["metrics"].append({"values": metrics, "step": step}),
         lambda: mlflow.log_metrics(metrics, step=step))


def log_summary(summary: dict, exclude: set[str] | frozenset[str] = frozenset()) -> None:
    """Numbers of the summary as metrics (but not the keys in `exclude`, e.g. ones logged per epoch),
    the whole summary as ``summary.json``."""
    log_metrics(_numbers(summary, exclude))
    _log(lambda r: r["dicts"].__setitem__("summary.json", summary), lambda: mlflow.log_dict(summary, "summary.json"))


def log_text(text: str, name: str) -> None:
    _log(lambda r: r["texts"].__setitem__(name, text), lambda: mlflow.log_text(text, name))


def log_image(image: np.ndarray, name: str) -> None:
    _log(lambda r: r["images"].__setitem__(name, image), lambda: mlflow.log_image(image, name))


def log_epochs(history: list[dict], step_key: str = "epoch") -> None:
    """Per-epoch metrics (every numeric value of each entry) with step = the entry's epoch."""
    for entry in history:
        log_metrics(_numbers(entry, {step_key}), step=int(entry[step_key]))


def log_segmentation_model(model, checkpoint: str) -> None:
    """The model as an MLflow PyTorch model under ``model/`` plus the checkpoint file itself (a path or URI)."""
    def log() -> None:
        import mlflow.pytorch

        needs = ["torch", "torchvision"] + (["open_clip_torch"] if getattr(model, "arch", None) == "clip" else [])
        mlflow.pytorch.log_model(model, name="model", serialization_format="pickle", pip_requirements=needs)
        _log_artifact(checkpoint, "checkpoint")

    _log(lambda r: r["models"].append(checkpoint), log)


def log_file(path: str, folder: str | None = None) -> None:
    """A file (local path or URI) as an artifact under `folder`."""
    _log(lambda r: r["files"].append({"path": path, "folder": folder}), lambda: _log_artifact(path, folder))


def _log_artifact(path: str, folder: str | None, client=None, run_id: str | None = None) -> None:
    """A file (local path or URI) as an artifact of the active run, or of `run_id` through `client`."""
    from wsss_ray.store import local_file

    with local_file(path) as local:
        if client is None:
            mlflow.log_artifact(local, folder)
        else:
            client.log_artifact(run_id, local, folder)


# ------------------------------------------------------------------ replay


def replay(output: str, uri: str | None = None) -> list[str]:
    """Log the records kept under `output` into MLflow (`uri`, else each record's own); returns the run ids.

    A record made after its run had started in MLflow continues that run; else a new
    run is made, tagged ``wsss_ray.run_id`` (the id in the output's rows). Each record
    is marked with where it went, so a second replay logs nothing twice.
    """
    from wsss_ray.store import atomic_write, list_files, read_bytes

    folder = records_folder(output)
    _, infos = list_files(folder)
    runs = []
    for info in infos:
        if not info.base_name.endswith(".json") or info.base_name.startswith("."):
            continue
        path = f"{folder}/{info.base_name}"  # info.path has no URI scheme on object stores
        record = json.loads(read_bytes(path))
        if record.get("replayed_to"):
            continue
        target = uri or record["uri"]
        if reachable(target) is not None:
            raise ConnectionError(f"MLflow at {target} cannot be reached; start it, or pass --mlflow-uri")
        run_id = _replay_one(record, target)
        record["replayed_to"] = {"uri": target, "mlflow_run_id": run_id}
        atomic_write(path, json.dumps(record, indent=1, default=str).encode())
        runs.append(run_id)
    return runs


def _replay_one(record: dict, uri: str) -> str:
    from mlflow.entities import Metric, Param

    from wsss_ray.store import read_bytes

    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    run_id = record.get("mlflow_run_id")
    if run_id is not None:
        try:
            client.get_run(run_id)
        except Exception:  # noqa: BLE001 - not in this store: a new run
            run_id = None
    if run_id is None:
        experiment = mlflow.get_experiment_by_name(record["experiment"])
        experiment_id = (experiment.experiment_id if experiment is not None else
                         mlflow.create_experiment(record["experiment"], artifact_location=_artifact_root(uri)))
        run_id = client.create_run(experiment_id, run_name=record["run_name"],
                                   tags={"wsss_ray.run_id": record["run_id"]}).info.run_id
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in record["params"].items()])
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, m["step"] or 0)
                                      for m in record["metrics"] for k, v in m["values"].items()])
    for name, value in record["dicts"].items():
        client.log_dict(run_id, value, name)
    for name, text in record["texts"].items():
        client.log_text(run_id, text, name)
    for name, path in record["images"].items():
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / name).write_bytes(read_bytes(path))
            client.log_artifact(run_id, str(Path(tmp) / name))
    for f in record["files"]:
        _log_artifact(f["path"], f["folder"], client, run_id)
    for checkpoint in record["models"]:
        _log_artifact(checkpoint, "checkpoint", client, run_id)
    for child in record.get("children", []):
        if child["mlflow_run_id"] is None:  # the others were logged before the server went away
            _create_child(client, run_id, child)
    client.set_terminated(run_id, record.get("status", "FINISHED"))
    return run_id


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m wsss_ray.tracking",
                                     description="Log the tracking records a job kept while MLflow was unreachable.")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("replay", help="replay OUTPUT/_tracking into MLflow")
    rep.add_argument("output", help="the job's --output (local or URI)")
    rep.add_argument("--mlflow-uri", help="where to log (default: the URI each record was made for)")
    args = parser.parse_args(argv)
    try:
        runs = replay(args.output, args.mlflow_uri)
    except ConnectionError as e:
        parser.exit(2, f"error: {e}\n")
    print(json.dumps({"replayed": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
