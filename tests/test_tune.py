"""Ray Tune sweeps: search-space checks, the CAM cache, the best config's round trip, resume."""

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from wsss_ray.cam import ClipES
from wsss_ray.config import LabelJobConfig, SweepConfig, TrainConfig, resolve_label_job
from wsss_ray.store import load_image, load_mask, read_source
from wsss_ray.testing.loopback import free_port
from wsss_ray.testing.processes import kill_tree
from wsss_ray.toyworld import SPLIT_SEEDS, generate
from wsss_ray.tune import (CamCache, apply_labels, apply_train, default_space, domains, evaluate_labels,
                           evaluate_tags, label_space_keys, load_space, tag_space_keys)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    manifest = generate(tmp_path_factory.mktemp("dev"), 6, seed=SPLIT_SEEDS["val"])
    items = read_source(str(manifest))
    return str(manifest), items, [load_image(it.image) for it in items]


def _space(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


def test_shipped_spaces_are_valid_settings():
    base = LabelJobConfig(input="dev")
    labels = load_space(default_space("labels"), lambda t: apply_labels(base, t), label_space_keys(base))
    assert {"excel.dense_layers", "excel.affinity", "excel.par_iters", "post.bg_power", "post.crf.iters"} <= set(labels)
    clip_es = LabelJobConfig(input="dev", method="clip-es")
    spaces = default_space("labels", "clip-es")
    assert {"clip_es.caa", "clip_es.templates", "post.bg_power"} <= set(load_space(
        spaces, lambda t: apply_labels(clip_es, t), label_space_keys(clip_es)))
    freeseg = LabelJobConfig(input="dev", method="freeseg")
    spaces = default_space("labels", "freeseg")
    assert {"freeseg.window", "post.bg_power"} <= set(load_space(spaces, lambda t: apply_labels(freeseg, t),
                                                                  label_space_keys(freeseg)))
    train = load_space(default_space("train"), lambda t: apply_train(TrainConfig(), t),
                       ["loss", "cgl_threshold", "lr", "epochs", "aug_scales"])
    assert set(train) == {"loss", "cgl_threshold", "lr", "epochs", "aug_scales"}
    assert set(domains(labels)) == set(labels)


@pytest.mark.parametrize("text, message", [
    ("post.bg_pow: {uniform: [0.5, 2]}\n", "'post.bg_pow' is not a setting"),
    ("input: {choice: [a, b]}\n", "'input' is not a setting"),
    ("excel.input_norm: {choice: [imagenet, lab]}\n", "'excel.input_norm' = 'lab' is not a valid setting"),
    ("post.bg_power: {normal: [0, 1]}\n", "needs one distribution, one of \\['choice', 'uniform'"),
    ("post.bg_power: {uniform: [1]}\n", "uniform takes \\[low, high\\]"),
    ("post.crf.iters: {choice: [-1, 5]}\n", "iters must be at least 0"),
])
def test_a_bad_search_space_is_a_clear_error_before_anything_starts(tmp_path, text, message):
    base = LabelJobConfig(input="dev")
    with pytest.raises(ValueError, match=message):
        load_space(_space(tmp_path, text), lambda t: apply_labels(base, t), label_space_keys(base))


def test_trial_values_apply_under_their_dotted_names():
    base = LabelJobConfig(input="dev", method="clip-es")
    config = apply_labels(base, {"clip_es.templates": "a photo of a {}.", "clip_es.scales": "json:[1.0, 0.5]",
                                 "post.crf.iters": 5, "post.bg_power": 0.5})
    assert config.method_config.templates == ("a photo of a {}.",) and config.method_config.scales == (1.0, 0.5)
    assert (config.post.crf.iters, config.post.bg_power) == (5, 0.5)
    assert config.method_config.caa == base.method_config.caa  # not in the trial: the base's


def test_post_processing_trials_reuse_the_cams_and_cam_level_ones_compute(dev, tmp_path, monkeypatch):
    _, items, images = dev
    calls = []
    original = ClipES.cam_tensors

    def counted(self, imgs, class_ids):
        calls.append(len(imgs))
        return original(self, imgs, class_ids)

    monkeypatch.setattr(ClipES, "cam_tensors", counted)
    cache = CamCache(str(tmp_path / "cache"))
    base = LabelJobConfig(input="dev", method="clip-es")
    first = evaluate_labels(apply_labels(base, {"post.bg_power": 1.0}), items, images, cache)
    assert first["cam_cache_hit"] == 0 and len(calls) == 1
    post_only = apply_labels(base, {"post.bg_power": 3.0, "post.crf.iters": 0})
    second = evaluate_labels(post_only, items, images, cache)
    assert second["cam_cache_hit"] == 1 and len(calls) == 1  # the CAM method was not called
    assert second["miou"] == evaluate_labels(post_only, items, images, cache=None)["miou"]  # same answer without
    assert len(calls) == 2
    cam_level = apply_labels(base, {"clip_es.caa": False, "post.bg_power": 3.0})
    third = evaluate_labels(cam_level, items, images, cache)
    assert third["cam_cache_hit"] == 0 and len(calls) == 3
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
    assert CamCache.key(cam_level) != CamCache.key(post_only) == CamCache.key(apply_labels(base, {}))
    assert CamCache.key(dataclasses.replace(base, precision="fp32")) != CamCache.key(base)  # CAMs depend on it


def _sweep_job(args, ray_env, env=None, **kw):
    return subprocess.run([sys.executable, str(ROOT / "jobs" / "tune.py"), *args], capture_output=True, text=True,
                          env={**ray_env, **(env or {})}, timeout=600, **kw)


@pytest.mark.slow
def test_a_sweep_logs_every_trial_and_its_best_config_runs_the_labelling_job(dev, tmp_path, mlflow_uri, ray_env):
    from mlflow.tracking import MlflowClient

    manifest, _, _ = dev
    space = _space(tmp_path, "clip_es.caa: {choice: [true, false]}\npost.bg_power: {choice: [0.5, 1.0, 2.0]}\n"
                             "post.crf.iters: {choice: [0, 3]}\n")
    uri = mlflow_uri
    result = _sweep_job(["--input", manifest, "--space", space, "--num-samples", "5", "--max-concurrent", "1",
                         "--output", str(tmp_path / "sweep"), "--mlflow-uri", uri, "--seed", "1"], ray_env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["trials"] == 5 and 0 < summary["best_miou"] <= 1
    assert summary["cam_cache_hits"] >= 3  # two CAM-level values among five trials: at most two compute CAMs

    best_file = tmp_path / "sweep" / "best_config.yaml"
    best = resolve_label_job({"input": manifest}, best_file)
    assert best.model == "toyclip" and best.post.bg_power in (0.5, 1.0, 2.0)
    assert set(yaml.safe_load(best_file.read_text())) == {"model", "pretrained", "labelset", "method", "clip_es", "post",
                                                          "labels", "tagger"}
    client = MlflowClient(uri)
    parent = client.get_run(summary["mlflow_run_id"])
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 5 and all("miou" in c.data.metrics and "post.bg_power" in c.data.params for c in children)
    assert max(c.data.metrics["miou"] for c in children) == pytest.approx(summary["best_miou"], abs=1e-4)
    assert "best_config.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}

    job = subprocess.run([sys.executable, str(ROOT / "jobs" / "pseudolabel.py"), "--input", manifest,
                          "--config", str(best_file), "--output", str(tmp_path / "labelled"), "--mlflow-uri", uri],
                         capture_output=True, text=True, env=ray_env, timeout=600)
    assert job.returncode == 0, job.stderr[-3000:]
    labelled = json.loads(job.stdout.strip().splitlines()[-1])
    assert labelled["ok"] == 6
    child_of_best = max(children, key=lambda c: c.data.metrics["miou"])
    assert labelled["miou"] == pytest.approx(child_of_best.data.metrics["miou"], abs=0.02)  # float16 CAM cache


@pytest.mark.slow
def test_a_sweep_goes_on_while_mlflow_is_down_and_its_trials_replay_as_child_runs(dev, tmp_path, ray_env):
    from mlflow.tracking import MlflowClient

    from wsss_ray import tracking

    down = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "sweep"
    result = _sweep_job(["--input", dev[0], "--space", _space(tmp_path, "post.bg_power: {choice: [0.5, 2.0]}\n"),
                         "--num-samples", "2", "--max-concurrent", "1", "--searcher", "random", "--output", str(out),
                         "--mlflow-uri", down], ray_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count(f"MLflow at {down} cannot be reached") == 1
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["trials"] == 2 and (out / "best_config.yaml").is_file()
    store = f"sqlite:///{tmp_path / 'later.db'}"
    [parent] = tracking.replay(str(out), store)
    client = MlflowClient(store)
    children = client.search_runs([client.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    tried = [json.loads(f.read_text())["post.bg_power"] for f in sorted(out.glob("trial_*/params.json"))]
    assert len(tried) == 2 and sorted(float(c.data.params["post.bg_power"]) for c in children) == sorted(tried)
    assert max(c.data.metrics["miou"] for c in children) == pytest.approx(summary["best_miou"], abs=1e-4)


@pytest.mark.slow
def test_a_killed_sweep_resumes_without_rerunning_finished_trials(tmp_path, mlflow_uri, ray_env):
    manifest = str(generate(tmp_path / "dev", 20, seed=SPLIT_SEEDS["val"]))
    space = _space(tmp_path, "post.bg_power: {uniform: [0.25, 4.0]}\npost.crf.iters: {choice: [0, 2]}\n"
                             "clip_es.scales: {choice: [[1.0, 2.0]]}\n")
    out = tmp_path / "sweep"
    args = ["--input", manifest, "--space", space, "--num-samples", "10", "--max-concurrent", "1", "--output",
            str(out), "--mlflow-uri", mlflow_uri, "--searcher", "random",
            "--no-cam-cache"]  # every trial computes its CAMs and reads the masks: the gate below stops it
    proc = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "tune.py"), *args], start_new_session=True,
                            env=ray_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def finished() -> list[Path]:
        return [p for p in out.glob("trial_*/result.json") if p.read_text().strip()]

    # Once 3 trials have finished, the first dev mask becomes a FIFO: every later trial blocks reading
    # it, so the kill lands part-way on any machine.
    gate = Path(manifest).parent / json.loads(Path(manifest).read_text().splitlines()[0])["mask"]
    mask = gate.read_bytes()
    try:
        deadline = time.time() + 300
        while len(finished()) < 3 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        gate.unlink()
        os.mkfifo(gate)
    finally:
        kill_tree(proc)
    gate.unlink()
    gate.write_bytes(mask)
    before = {p.parent.name: p.read_text() for p in finished()}
    # Part-way by construction: the gate blocks every trial that reads the mask after the swap (a trial's
    # result.json may appear a few seconds after it ends, so more than 3 may have finished by then).
    assert 3 <= len(before) < 10, before.keys()
    result = _sweep_job(args, ray_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["trials"] == 10
    after = {p.parent.name: p.read_text() for p in finished()}
    assert len(after) == 10
    assert all(after[name] == text for name, text in before.items())  # finished trials were not run again


def test_sweep_settings_are_checked(tmp_path):
    from wsss_ray.config import resolve

    assert resolve(SweepConfig, {"num_samples": 4, "searcher": "random"}) == SweepConfig(num_samples=4, searcher="random")
    with pytest.raises(ValueError, match="kind must be one of \\['labels', 'tags', 'train'\\]"):
        resolve(SweepConfig, {"kind": "prompts"})
    with pytest.raises(ValueError, match="save_to_model writes label_config.yaml beside a local-dir: model"):
        resolve(SweepConfig, {"save_to_model": True})  # toyclip lives inside the package
    assert resolve(SweepConfig, {"save_to_model": True, "model": f"local-dir:{tmp_path}"}).save_to_model


def test_a_tags_trial_scores_the_tagger_s_labels_and_reuses_its_scores_across_thresholds(dev, monkeypatch):
    from wsss_ray.labeler import Labeler
    from wsss_ray.metrics import tag_counts, tag_scores
    from wsss_ray.tagger import Tagger

    _, items, images = dev
    base = resolve_label_job({"input": "dev"})
    assert "tagger.threshold" in tag_space_keys(base) and not any(k.startswith("post.") for k in tag_space_keys(base))
    calls = []
    scores = Tagger.scores
    monkeypatch.setattr(Tagger, "scores", lambda self, imgs: calls.append(len(imgs)) or scores(self, imgs))
    for threshold in (0.01, 0.05, 0.2):
        config = apply_labels(base, {"tagger.threshold": threshold})
        got = evaluate_tags(config, items, images)
        tags = Labeler.from_config(config).tags(images)
        expected = tag_scores(tag_counts([it.labels for it in items], [t.labels for t in tags]))
        assert got["tag_f1"] == expected["tag_f1"] and got["tag_exact"] == expected["tag_exact"]
        assert 0 < got["tag_map"] <= 1
    assert len([c for c in calls if c == len(images)]) == 1 + 3  # one trial computed them; the checks above, 3


def test_labels_trials_can_sweep_the_tagger_and_label_with_its_labels(dev, tmp_path):
    _, items, images = dev
    base = resolve_label_job({"input": "dev", "labels": "auto"})
    assert {"labels", "tagger.threshold"} <= set(label_space_keys(base))
    cache = CamCache(str(tmp_path / "cache"))
    strict = apply_labels(base, {"tagger.threshold": 1.0})  # no label proposed: every mask all background
    loose = apply_labels(base, {"tagger.threshold": 0.01})
    assert CamCache.key(strict) != CamCache.key(loose)
    truths = [load_mask(it.mask) for it in items]
    present = len(set(np.unique(np.concatenate([t.ravel() for t in truths]))))
    background_iou = sum((t == 0).sum() for t in truths) / sum(t.size for t in truths)
    # Every pixel background: its IoU is its share of the pixels, every other class present scores 0.
    assert evaluate_labels(strict, items, images, cache)["miou"] == pytest.approx(background_iou / present)
    stored = cache.load(CamCache.key(strict), [it.id for it in items])
    assert all(labels == [] and cams.shape[0] == 0 for labels, cams in stored.values())
    assert evaluate_labels(loose, items, images, cache)["miou"] > evaluate_labels(strict, items, images, cache)["miou"]


@pytest.mark.slow
def test_a_tags_sweep_needs_only_image_level_labels_and_its_best_config_runs_the_job(dev, tmp_path, mlflow_uri, ray_env):
    from mlflow.tracking import MlflowClient

    manifest, _, _ = dev
    folder = Path(manifest).parent
    labels_only = tmp_path / "labels_only.jsonl"  # image-level labels, no masks
    labels_only.write_text("".join(json.dumps({"id": r["id"], "image": str(folder / r["image"]), "labels": r["labels"]})
                                   + "\n" for r in map(json.loads, Path(manifest).read_text().splitlines())))
    space = _space(tmp_path, "tagger.threshold: {choice: [0.005, 0.025, 0.3, 0.9]}\n")
    uri = mlflow_uri
    result = _sweep_job(["--kind", "tags", "--input", str(labels_only), "--space", space, "--num-samples", "4",
                         "--searcher", "random", "--max-concurrent", "1", "--output", str(tmp_path / "sweep"),
                         "--mlflow-uri", uri], ray_env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    client = MlflowClient(uri)
    parent = client.get_run(summary["mlflow_run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert summary["trials"] == len(children) == 4
    assert all({"tag_f1", "tag_map", "tag_exact"} <= set(c.data.metrics) for c in children)
    best = max(children, key=lambda c: c.data.metrics["tag_f1"])
    assert summary["best_tag_f1"] == pytest.approx(best.data.metrics["tag_f1"], abs=1e-4)
    best_file = tmp_path / "sweep" / "best_config.yaml"
    chosen = yaml.safe_load(best_file.read_text())
    assert set(chosen) == {"model", "pretrained", "labelset", "tagger"}
    assert chosen["tagger"]["threshold"] == pytest.approx(float(best.data.params["tagger.threshold"]))

    job = subprocess.run([sys.executable, str(ROOT / "jobs" / "pseudolabel.py"), "--input", str(labels_only),
                          "--labels", "auto", "--config", str(best_file), "--output", str(tmp_path / "labelled"),
                          "--mlflow-uri", uri], capture_output=True, text=True,
                         env=ray_env, timeout=600)
    assert job.returncode == 0, job.stderr[-3000:]
    labelled = json.loads(job.stdout.strip().splitlines()[-1])
    assert labelled["tag_f1"] == pytest.approx(summary["best_tag_f1"], abs=1e-4)  # the same labels as the best trial


def test_saving_a_sweep_s_best_settings_to_a_model_replaces_its_sections_and_keeps_the_others(tmp_path):
    from wsss_ray.config import model_settings
    from wsss_ray.tune import save_model_settings

    (tmp_path / "label_config.yaml").write_text("method: clip-es\nclip_es: {caa: false}\npost: {bg_power: 0.5}\n")
    save_model_settings(f"local-dir:{tmp_path}", {"tagger": {"threshold": 0.05}})
    assert model_settings(f"local-dir:{tmp_path}") == {"method": "clip-es", "clip_es": {"caa": False},
                                                      "post": {"bg_power": 0.5}, "tagger": {"threshold": 0.05}}
    save_model_settings(f"local-dir:{tmp_path}", {"post": {"bg_power": 2.0}, "tagger": {"threshold": 0.1}})
    assert model_settings(f"local-dir:{tmp_path}")["post"] == {"bg_power": 2.0}
    assert model_settings(f"local-dir:{tmp_path}")["clip_es"] == {"caa": False}
    assert resolve_label_job({"model": f"local-dir:{tmp_path}"}).tagger.threshold == 0.1
