"""Ray Train on local Ray (2 CPUs, 2 DDP workers on gloo): loss, checkpoints, resume, a killed worker,
MLflow contents, prediction. Plus the TrainConfig flag/config precedence (fast)."""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from wsss_ray.config import TrainConfig, resolve

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ fast: settings


def test_train_config_defaults_file_then_flags(tmp_path):
    cfg_file = tmp_path / "train.yaml"
    cfg_file.write_text("loss: ce\nepochs: 7\nlr: 0.01\nval: /data/val.jsonl\n")
    assert resolve(TrainConfig, {}) == TrainConfig()
    cfg = resolve(TrainConfig, {"epochs": 3, "num_workers": 4}, cfg_file)
    assert (cfg.loss, cfg.epochs, cfg.lr, cfg.val, cfg.num_workers) == ("ce", 3, 0.01, "/data/val.jsonl", 4)
    cfg_file.write_text("learning_rate: 0.1\n")
    with pytest.raises(ValueError, match="unknown training settings"):
        resolve(TrainConfig, {}, cfg_file)
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="dice")


def test_train_job_flags_map_to_config_and_params(tmp_path):
    sys.path.insert(0, str(ROOT / "jobs"))
    try:
        import train as job
    finally:
        sys.path.pop(0)
    cfg_file = tmp_path / "t.yaml"
    cfg_file.write_text("loss: ce\ncrop: 48\nseed: 5\n")
    config, uri = job.parse(["--input", "in", "--loss", "cgl", "--cgl-threshold", "0.9", "--epochs", "2",
                             "--num-workers", "1", "--use-gpu", "--config", str(cfg_file), "--mlflow-uri", "x"])
    assert (config.input, config.loss, config.cgl_threshold, config.epochs, config.num_workers) == \
        ("in", "cgl", 0.9, 2, 1)
    assert (config.crop, config.seed, config.use_gpu, config.arch, uri) == (48, 5, True, "tiny", "x")
    from wsss_ray.config import flatten

    assert set(flatten(config)) == {f.replace("-", "_") for f in [
        "input", "val", "output", "labelset", "loss", "cgl-threshold", "arch", "backbone-weights", "model",
        "pretrained", "unfreeze", "feature-blocks", "clip-scale", "feature-cache-mb", "background-offset", "refine",
        "calibration-images", "epochs",
        "batch-size", "lr", "crop", "aug-scales", "num-workers", "use-gpu", "seed"]}
    config, _ = job.parse(["--arch", "clip", "--model", "local-dir:m", "--unfreeze", "1", "--feature-cache-mb", "64"])
    assert (config.arch, config.model, config.unfreeze, config.feature_cache_mb) == ("clip", "local-dir:m", 1, 64.0)


# ------------------------------------------------------------------ end to end on local Ray


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """16 toy train images as an exact-mask Parquet input plus one error row, and 8 val images."""
    from wsss_ray.store import OUTPUT_SCHEMA
    from wsss_ray.toyworld import generate

    root = tmp_path_factory.mktemp("traindata")
    train = generate(root / "train", 16, seed=0)
    val = generate(root / "val", 8, seed=1_000_000)
    parquet = root / "parquet"
    _write_exact_masks(str(train), parquet)
    bad = {c: [None] for c in OUTPUT_SCHEMA.names}
    bad.update(id=["broken"], image=[str(root / "missing.png")], labels=[["cow"]], status=["error"],
               error=["cannot read image"])
    pq.write_table(pa.table(bad, schema=OUTPUT_SCHEMA), parquet / "part-errors.parquet")
    return {"root": root, "train": str(train), "val": str(val), "parquet": str(parquet)}


def _write_exact_masks(manifest: str, parquet: Path) -> None:
    """The manifest's ground-truth masks (confidence 255 everywhere) as one output Parquet file."""
    from wsss_ray.masks import encode_png
    from wsss_ray.stages import objects, output_table
    from wsss_ray.store import load_mask, read_source

    items = read_source(manifest)
    masks = [load_mask(it.mask) for it in items]
    batch = {"id": [it.id for it in items], "image": [it.image for it in items],
             "labels": objects([list(it.labels) for it in items]),
             "width": np.array([m.shape[1] for m in masks], np.int32),
             "height": np.array([m.shape[0] for m in masks], np.int32),
             "status": ["ok"] * len(items), "error": [None] * len(items)}
    pngs = [(encode_png(m), encode_png(np.full(m.shape, 255, np.uint8), palette=False)) for m in masks]
    parquet.mkdir(parents=True)
    pq.write_table(output_table(batch, pngs, labelset="toyworld", model="exact", method="ground-truth", run_id="gt"),
                   parquet / "part-exact.parquet")


def _config(data, output, **kw) -> TrainConfig:
    return TrainConfig(**{"input": data["parquet"], "val": data["val"], "output": str(output), "batch_size": 4,
                          "num_workers": 2, **kw})


@pytest.fixture(scope="module")
def trained(ray_local, data, tmp_path_factory):
    """Two epochs with MLflow, then a resumed run to three epochs into the same output."""
    from wsss_ray.train.trainer import run_tracked

    out = tmp_path_factory.mktemp("run") / "train"
    uri = f"sqlite:///{data['root']}/mlflow.db"
    first = run_tracked(_config(data, out, epochs=2, lr=0.01), uri)
    second = run_tracked(_config(data, out, epochs=3, lr=0.01), uri)
    return {"out": out, "uri": uri, "first": first, "second": second}


@pytest.mark.slow
def test_two_worker_ddp_loss_decreases_and_checkpoints_exist(trained):
    first = trained["first"]
    assert first["epochs"] == first["epochs_run"] == 2
    ckpts = sorted(p for p in trained["out"].glob("checkpoint_*") if p.is_dir())
    assert ckpts and all((c / "model.pt").is_file() and (c / "state.json").is_file() for c in ckpts)
    history = json.loads((ckpts[-1] / "state.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[1]["train_loss"] < history[0]["train_loss"], history
    assert all(h["samples"] == 16 for h in history)  # the error row is skipped: 16 ok rows, not 17
    best = max(h["val_miou"] for h in history[:2])          # the first run's two epochs
    assert first["best_miou"] == round(best, 4)
    chosen = json.loads((Path(first["best_checkpoint"]).parent / "state.json").read_text())
    assert chosen["history"][-1]["val_miou"] == best          # the checkpoint of that epoch


@pytest.mark.slow
def test_rerun_resumes_and_trains_only_the_missing_epoch(trained):
    second = trained["second"]
    assert (second["epochs"], second["epochs_run"]) == (3, 1)
    from wsss_ray.train.model import load_checkpoint

    _, meta = load_checkpoint(second["last_checkpoint"])
    assert meta["epoch"] == 3 and meta["labelset"] == "toyworld"


@pytest.mark.slow
def test_mlflow_run_has_params_epoch_metrics_model_and_overlays(trained):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=trained["uri"])
    run = client.get_run(trained["first"]["mlflow_run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "train"
    assert run.data.params["loss"] == "cgl" and run.data.params["num_workers"] == "2"
    history = client.get_metric_history(run.info.run_id, "val_miou")
    assert sorted(m.step for m in history) == [1, 2]
    for key in ("train_loss", "samples_per_s"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [1, 2], key
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoint", "predictions.png", "summary.json"} <= names
    models = client.search_logged_models([run.info.experiment_id])  # MLflow 3: a LoggedModel, not a run artifact
    assert any(m.source_run_id == run.info.run_id and m.name == "model" for m in models)
    assert "model.pt" in {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "checkpoint")}


def _crash_hook_factory(marker: str, log: str, run_dir: str):
    def hook(epoch: int, rank: int) -> None:
        with open(log, "a") as f:
            f.write(f"{epoch} {rank}\n")
        if epoch == 2 and rank == 1 and not os.path.exists(marker):
            open(marker, "w").close()
            # Crash once the controller has registered epoch 1's checkpoint (its snapshot names it).
            snapshot, deadline = Path(run_dir) / "checkpoint_manager_snapshot.json", time.monotonic() + 120
            while not (snapshot.is_file() and "checkpoint_" in snapshot.read_text()) and time.monotonic() < deadline:
                time.sleep(0.05)
            os._exit(1)
    return hook


@pytest.mark.slow
def test_killed_worker_continues_from_the_last_checkpoint(ray_local, data, tmp_path):
    from wsss_ray.train.trainer import run

    marker, log = tmp_path / "crashed", tmp_path / "epochs.log"
    summary = run(_config(data, tmp_path / "train", epochs=2),
                  epoch_hook=_crash_hook_factory(str(marker), str(log), str(tmp_path / "train")))
    assert marker.exists()
    assert summary["epochs"] == 2
    starts = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    assert starts.count((1, 0)) == 1, starts   # epoch 1 trained once: the restart resumed at epoch 2
    assert starts.count((2, 0)) == 2, starts   # epoch 2 started, crashed, started again


@pytest.mark.slow
def test_predict_writes_pipeline_schema_and_pngs(trained, data, tmp_path):
    from wsss_ray.masks import decode_png
    from wsss_ray.config import PredictConfig
    from wsss_ray.store import OUTPUT_SCHEMA
    from wsss_ray.train.predict import run

    manifest = Path(data["val"])
    lines = manifest.read_text().splitlines()
    (manifest.parent / "images" / "corrupt.png").write_bytes(b"not a png")
    bad_manifest = manifest.parent / "with_bad.jsonl"
    bad_manifest.write_text("\n".join(lines[:3] + [json.dumps({"id": "corrupt", "image": "images/corrupt.png",
                                                               "labels": ["cow"]})]) + "\n")
    ckpt = trained["second"]["best_checkpoint"]
    summary = run(PredictConfig(checkpoint=ckpt, input=str(bad_manifest), output=str(tmp_path / "pred"),
                                png_dir=str(tmp_path / "png"), batch_size=2))
    assert (summary["ok"], summary["errors"], summary["pngs"]) == (3, 1, 3)
    table = pads.dataset(str(tmp_path / "pred"), format="parquet").to_table()
    assert table.schema.equals(OUTPUT_SCHEMA)
    rows = {r["id"]: r for r in table.to_pylist()}
    assert "cannot read image" in rows["corrupt"]["error"]
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert {r["method"] for r in ok} == {"segnet"} and {r["model"] for r in ok} == {ckpt}
    mask, conf = decode_png(ok[0]["mask"]), decode_png(ok[0]["confidence"])
    assert mask.shape == conf.shape == (64, 64) and mask.max() < 9 and conf.dtype == np.uint8
    assert len(list((tmp_path / "png").glob("*.png"))) == 3


@pytest.mark.slow
def test_clip_arch_trains_its_decoder_with_ray_train_and_predicts(ray_local, data, tmp_path):
    """arch clip end to end: one DDP worker, the tower unchanged, a small checkpoint, the prediction job."""
    from wsss_ray.config import PredictConfig
    from wsss_ray.store import read_output
    from wsss_ray.train.clipseg import weights_sha256
    from wsss_ray.train.model import build_model, load_checkpoint
    from wsss_ray.train.predict import run as predict
    from wsss_ray.train.trainer import run

    config = _config(data, tmp_path / "train", arch="clip", model="toyclip", epochs=2, lr=0.01, num_workers=1,
                     feature_cache_mb=32)
    summary = run(config)
    history = summary["history"]
    assert summary["epochs_run"] == 2 and history[1]["train_loss"] < history[0]["train_loss"], history
    checkpoint = summary["last_checkpoint"]
    model, meta = load_checkpoint(checkpoint)
    fresh = build_model(9, "clip", options={"model": "toyclip"})
    assert meta["backbone_sha256"] == weights_sha256(fresh.backbone) == weights_sha256(model.backbone)
    assert Path(checkpoint).stat().st_size < 2_000_000   # the decoder; the 3.4 MB tower stays out
    out = predict(PredictConfig(checkpoint=str(tmp_path / "train"), input=data["val"], output=str(tmp_path / "pred"),
                                batch_size=4))
    assert (out["ok"], out["errors"]) == (8, 0)
    assert set(read_output(str(tmp_path / "pred"), ["method"])["method"].to_pylist()) == {"segnet"}


@pytest.mark.slow
def test_an_image_that_kills_every_segmentation_actor_fails_prediction_naming_it(ray_local, tmp_path):
    """Prediction's actors restart a bounded number of times, as the labelling job's do."""
    from PIL import Image

    from wsss_ray.config import PredictConfig
    from wsss_ray.errors import JobError
    from wsss_ray.toyworld import generate
    from wsss_ray.train.model import build_model, save_checkpoint
    from wsss_ray.train.predict import SegmentStage, run

    class Poison(SegmentStage):  # defined here so Ray pickles it by value
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            forward = self.model.forward

            def forward_or_die(x):
                if tuple(x.shape[-2:]) == (41, 50):
                    os._exit(1)  # as the system's OOM killer would end it
                return forward(x)

            self.model.forward = forward_or_die

    checkpoint = save_checkpoint(tmp_path / "model.pt", build_model(9, "tiny"), {"labelset": "toyworld"})
    manifest = generate(tmp_path / "toy", 3, seed=2_000_600)
    Image.fromarray(np.zeros((41, 50, 3), np.uint8)).save(tmp_path / "poison.png")
    with open(manifest, "a") as f:
        f.write(json.dumps({"id": "poison", "image": str(tmp_path / "poison.png"), "labels": ["cow"]}) + "\n")
    with pytest.raises(JobError, match="^item 'poison' ends the segment stage's process each time it takes it"):
        run(PredictConfig(checkpoint=str(checkpoint), input=str(manifest), output=str(tmp_path / "pred"),
                          batch_size=2), segment_stage=Poison)


@pytest.mark.slow
def test_predict_takes_a_file_a_checkpoint_folder_or_the_training_output(trained, tmp_path):
    from wsss_ray.train.model import load_checkpoint
    from wsss_ray.train.predict import resolve_checkpoint

    best = trained["second"]["best_checkpoint"]
    assert resolve_checkpoint(best)[0] == best
    folder = str(Path(best).parent)
    assert resolve_checkpoint(folder) == (f"{folder}/model.pt", "the checkpoint folder given")
    chosen, why = resolve_checkpoint(str(trained["out"]))
    kept = [load_checkpoint(p)[1] for p in trained["out"].glob("checkpoint_*/model.pt")]
    assert load_checkpoint(chosen)[1]["val_miou"] == max(m["val_miou"] for m in kept)
    assert chosen == best and "best checkpoint" in why and "val mIoU" in why
    with pytest.raises(ValueError, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="no training run"):
        resolve_checkpoint(str(tmp_path))


def test_predict_flags_share_the_labelling_jobs_names(tmp_path, capsys):
    from wsss_ray.config import PredictConfig

    sys.path.insert(0, str(ROOT / "jobs"))
    try:
        import predict as job
    finally:
        sys.path.pop(0)
    config, _ = job.parse(["--checkpoint", "outputs/train", "--input", "in.jsonl", "--concurrency", "1,3",
                           "--num-gpus", "0", "--batch-size", "4"])
    assert config == PredictConfig(checkpoint="outputs/train", input="in.jsonl", concurrency=(1, 3), num_gpus=0.0,
                                   batch_size=4)
    with pytest.raises(SystemExit):
        job.parse(["--input", "in.jsonl"])
    assert "prediction needs --checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_a_training_sweep_reports_epochs_and_writes_a_train_config(data, tmp_path, mlflow_uri, ray_env):
    import subprocess

    from mlflow.tracking import MlflowClient

    (tmp_path / "space.yaml").write_text("loss: {choice: [cgl, ce]}\n")
    (tmp_path / "base.yaml").write_text("epochs: 2\nbatch_size: 4\n")
    uri = mlflow_uri
    result = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "tune.py"), "--kind", "train", "--input", data["parquet"], "--val",
         data["val"], "--space", str(tmp_path / "space.yaml"), "--config", str(tmp_path / "base.yaml"),
         "--num-samples", "2", "--searcher", "random", "--output", str(tmp_path / "sweep"), "--mlflow-uri", uri],
        capture_output=True, text=True, env=ray_env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    client = MlflowClient(uri)
    children = client.search_runs([client.get_run(summary["mlflow_run_id"]).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{summary['mlflow_run_id']}'")
    assert len(children) == 2 and summary["trials"] == 2
    assert all("val_miou" in c.data.metrics and c.data.params["epochs"] == "2" for c in children)
    # Each trial's best epoch (Tune's result.json, one line per report); the sweep's best is the best
    # of them, and best_config.yaml holds that trial's settings.
    bests = {}
    for result in (tmp_path / "sweep").glob("trial_*/result.json"):
        reports = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        loss = json.loads((result.parent / "params.json").read_text())["loss"]
        bests[result.parent.name] = (max(r["val_miou"] for r in reports), loss)
    assert len(bests) == 2 and summary["best_val_miou"] == round(max(v for v, _ in bests.values()), 4)
    best = resolve(TrainConfig, {"input": data["parquet"]}, tmp_path / "sweep" / "best_config.yaml")
    assert best.loss == max(bests.values())[1] and best.epochs == 2 and best.batch_size == 4
