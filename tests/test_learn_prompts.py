"""SemPLeS prompt learning end to end on local Ray: the job, its resume, MLflow, then labelling with the prompts."""

import importlib.util
import json
from pathlib import Path

import pytest

from wsss_ray.cam.semples import load_prompts
from wsss_ray.config import LearnPromptsConfig
from wsss_ray.labelset import load_labelset
from wsss_ray.toyworld import SPLIT_SEEDS, generate

REPO = Path(__file__).resolve().parents[1]


def _job(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_job", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prompt_length_is_capped_by_the_text_context():
    from wsss_ray.train.prompts import prompt_length

    assert prompt_length(LearnPromptsConfig(), 77) == 30        # SemPLeS's L fits CLIP's context
    assert prompt_length(LearnPromptsConfig(), 24) == 18        # toyclip: sot, 3 words, '.', eot leave 18
    assert prompt_length(LearnPromptsConfig(length=4), 24) == 4


def test_bad_settings_are_flag_errors(capsys):
    with pytest.raises(SystemExit):
        _job("learn_prompts").parse(["--epochs", "0"])
    assert "epochs must be at least 1" in capsys.readouterr().err


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
def test_learn_resume_and_label_with_the_prompts(ray_local, tmp_path, capsys, mlflow_uri):
    from mlflow.tracking import MlflowClient

    manifest = generate(tmp_path / "train", 16, seed=SPLIT_SEEDS["train"] + 900)
    with manifest.open("a") as f:                                   # an image the labelset does not know
        f.write(json.dumps({"id": "odd", "image": "images/toy0000900.png", "labels": ["unicorn"]}) + "\n")
    manifest = str(manifest)
    out, uri = str(tmp_path / "prompts"), mlflow_uri
    job = _job("learn_prompts")
    common = ["--input", manifest, "--output", out, "--batch-size", "16", "--mlflow-uri", uri]
    assert job.main(common + ["--epochs", "2"]) == 0
    first = _last_json(capsys)
    labelset = load_labelset("toyworld")
    assert (first["epochs"], first["images"], first["length"], first["skipped"]) == (2, 16, 18, 1)
    assert first["pairs"] >= 16                                  # one pair per (image, class)
    prompts = load_prompts(out, labelset, 128)
    assert tuple(prompts.embeddings.shape) == (len(labelset), 18, 128) and prompts.model == "toyclip"
    assert set(first["words"]) == set(labelset.names)
    assert all(len(w["tokens"].split()) == 18 for w in first["words"].values())

    client = MlflowClient(uri)
    losses = client.get_metric_history(first["mlflow_run_id"], "loss")
    assert [m.step for m in sorted(losses, key=lambda m: m.step)] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(first["mlflow_run_id"])}
    assert {"nearest_words.txt", "prompts.safetensors"} <= artifacts
    assert client.get_run(first["mlflow_run_id"]).data.params["text_weight"] == "0.02"

    done = Path(out) / "backgrounds.json"
    stamp = done.stat().st_mtime_ns
    assert job.main(common + ["--epochs", "4"]) == 0              # resumes at epoch 3
    second = _last_json(capsys)
    assert second["epochs"] == 4 and done.stat().st_mtime_ns == stamp   # the backgrounds were reused
    history = {m.step: m.value for m in client.get_metric_history(second["mlflow_run_id"], "loss")}
    assert sorted(history) == [1, 2, 3, 4]
    earlier = {m.step: m.value for m in client.get_metric_history(first["mlflow_run_id"], "loss")}
    assert history[1] == pytest.approx(earlier[1]) and history[2] == pytest.approx(earlier[2])
    assert history[4] < history[1]                               # the loss went down

    test = str(generate(tmp_path / "test", 4, seed=SPLIT_SEEDS["test"] + 900))
    assert _job("pseudolabel").main(["--input", test, "--output", str(tmp_path / "labels"), "--method", "semples",
                                     "--prompts", out, "--no-crf", "--mlflow-uri", uri]) == 0
    labelled = _last_json(capsys)
    assert (labelled["rows"], labelled["ok"], labelled["errors"]) == (4, 4, 0)
    params = client.get_run(labelled["mlflow_run_id"]).data.params
    assert params["method"] == "semples" and params["semples.prompts"] == out
