import subprocess
import sys

import pytest
import yaml

from wsss_ray.config import (ClipESConfig, ExcelConfig, CrfConfig, LabelJobConfig, PostConfig, TrainConfig, label_keys,
                             model_settings, params, parse_concurrency, resolve_label_job, resolve,
                             settings_dict, write_settings)


def _job_parse():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("pseudolabel_job", Path(__file__).parents[1] / "jobs" / "pseudolabel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parse


def test_importing_the_config_module_loads_nothing_heavy():
    code = ("import sys, wsss_ray.config; "
            "print(sorted(m for m in ('torch', 'open_clip', 'ray', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_method_settings_sit_under_the_method_key_and_post_is_shared(tmp_path):
    (tmp_path / "c.yaml").write_text("input: a.jsonl\nmodel: ViT-B-16\nmethod: clip-es\nclip_es: {caa: false, scales: [1.0, 2.0]}\n"
                                     "post: {bg_power: 2, crf: {iters: 5}}\n")
    cfg = resolve_label_job({}, tmp_path / "c.yaml")
    assert cfg.method_config == ClipESConfig(caa=False, scales=(1.0, 2.0))
    assert cfg.post == PostConfig(bg_power=2, crf=CrfConfig(iters=5))
    p = params(cfg)
    assert p["clip_es.caa"] is False and p["clip_es.scales"] == "1.0,2.0"
    assert p["post.crf.iters"] == 5 and p["post.bg_power"] == 2 and p["post.crf.bilateral_sxy"] == 67.0
    cam_keys, post_keys = label_keys(cfg)
    assert "clip_es.caa" in cam_keys and "post.crf.iters" in post_keys and not set(cam_keys) & set(post_keys)


def test_defaults_for_other_models_are_excels_reference():
    cfg = resolve_label_job({"model": "ViT-B-16", "input": "a"})
    assert cfg.method == "excel" and cfg.method_config == ExcelConfig()
    assert (cfg.method_config.input_size, cfg.method_config.box_threshold, cfg.method_config.par_iters) == (320, 0.79, 0)
    clip_es = resolve_label_job({"model": "ViT-B-16", "input": "a", "method": "clip-es"})
    assert clip_es.method_config == ClipESConfig() and clip_es.method_config.caa is True
    assert cfg.post.crf == CrfConfig(iters=10, gauss_sxy=1, gauss_compat=3, bilateral_sxy=67, bilateral_srgb=3,
                                     bilateral_compat=4)
    assert cfg.post.bg_power == 1.0


def test_toyclip_brings_its_own_settings_and_each_layer_overrides_the_one_before(tmp_path):
    bundled = model_settings("toyclip")
    assert bundled["clip_es"]["caa"] is False and bundled["post"]["bg_power"] == 0.5
    cfg = resolve_label_job({"input": "a"})  # model defaults to toyclip
    assert cfg.method_config.caa is False and cfg.method_config.scales == (0.75, 1.0, 1.5, 2.0)
    assert cfg.post.bg_power == 0.5
    (tmp_path / "c.yaml").write_text("post: {bg_power: 2}\nclip_es: {caa: true}\n")
    over = resolve_label_job({"input": "a", "clip_es.caa": False}, tmp_path / "c.yaml")
    assert over.post.bg_power == 2  # file over the model
    assert over.method_config.caa is False  # flag over the file
    assert over.method_config.scales == (0.75, 1.0, 1.5, 2.0)  # untouched: still the model's


def test_a_local_dir_model_may_carry_label_config(tmp_path):
    (tmp_path / "label_config.yaml").write_text("method: clip-es\nclip_es: {score: logit}\npost: {crf: {iters: 2}}\n")
    cfg = resolve_label_job({"input": "a", "model": f"local-dir:{tmp_path}"})
    assert cfg.method_config.score == "logit" and cfg.post.crf.iters == 2
    (tmp_path / "label_config.yaml").write_text("output: somewhere\n")
    with pytest.raises(ValueError, match="output"):
        resolve_label_job({"input": "a", "model": f"local-dir:{tmp_path}"})


def test_settings_round_trip_through_a_file(tmp_path):
    cfg = resolve_label_job({"input": "a", "model": "ViT-B-16", "method": "clip-es", "clip_es.caa": False,
                             "post.bg_power": 0.25,
                             "concurrency": "1,3"})
    path = write_settings(cfg, tmp_path / "best.yaml")
    again = resolve_label_job({}, path)
    assert again == cfg
    label_only = write_settings(cfg, tmp_path / "label_config.yaml", label_only=True)
    assert set(yaml.safe_load(label_only.read_text())) == {"method", "clip_es", "post", "tagger"}


def test_flags_override_the_config_file_which_overrides_defaults(tmp_path):
    (tmp_path / "run.yaml").write_text(
        "input: a.jsonl\noutput: from-file\nmodel: ViT-B-16\nmethod: clip-es\nbatch_size: 4\nconcurrency: [1, 3]\n"
        "post: {bg_power: 2, crf: {iters: 3}}\n")
    config, uri = _job_parse()(["--config", str(tmp_path / "run.yaml"), "--batch-size", "8", "--no-crf",
                                "--no-caa", "--mlflow-uri", "sqlite:///x.db"])
    assert (config.input, config.output, config.batch_size) == ("a.jsonl", "from-file", 8)
    assert config.concurrency == (1, 3) and config.num_gpus is None
    assert (config.post.bg_power, config.post.crf.iters) == (2, 0)
    assert config.method_config.caa is False and config.method_config.scales == (1.0,)
    assert uri == "sqlite:///x.db"
    flags, _ = _job_parse()(["--input", "b.jsonl", "--concurrency", "2,5", "--num-gpus", "1"])
    assert (flags.concurrency, flags.num_gpus, flags.batch_size) == ((2, 5), 1.0, 16)


def test_no_input_generates_the_toy_world_and_uses_toyclip_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config, _ = _job_parse()(["--limit", "5"])
    assert config.input.endswith("manifest.jsonl") and (tmp_path / "outputs" / "toyworld-test").is_dir()
    assert config == resolve_label_job({"input": config.input, "limit": 5})
    assert config.model == "toyclip" and config.method_config.caa is False


@pytest.mark.parametrize("settings, message", [
    ({"batchsize": 3}, "unknown settings \\['batchsize'\\]"),
    ({"concurrency": "3,1"}, "concurrency 3,1 is not a range"),
    ({"method": "gradcam"}, "unknown method 'gradcam'; choose from 'clip-es', 'excel', 'freeseg', 'semples'"),
    ({"clip_es": {"scor": "logit"}}, "unknown clip_es settings \\['scor'\\]"),
    ({"clip_es": {"score": "logits"}}, "clip_es.score must be one of"),
    ({"clip_es": {"softmax_over": "some"}}, "clip_es.softmax_over must be one of"),
    ({"clip_es": {"synonym_fusion": "join"}}, "clip_es.synonym_fusion must be one of"),
    ({"clip_es": {"caa_source": "values"}}, "clip_es.caa_source must be one of"),
    ({"clip_es": {"templates": ["no slot"]}}, "needs a \\{\\}"),
    ({"post": {"crf": {"sxy": 3}}}, "unknown post.crf settings \\['sxy'\\]"),
    ({"post": {"bg_power": 0}}, "bg_power must be positive"),
    ({"post": {"crf": {"iters": -1}}}, "iters must be at least 0"),
])
def test_bad_settings_are_clear_errors_before_anything_starts(settings, message):
    with pytest.raises(ValueError, match=message):
        resolve_label_job({"input": "a", **settings})


def test_bad_flags_exit_with_the_message(capsys):
    assert parse_concurrency("4") == (4, 4) and parse_concurrency([1, 4]) == (1, 4)
    with pytest.raises(SystemExit):
        _job_parse()(["--input", "a", "--concurrency", "one"])
    assert "is not MIN[,MAX]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _job_parse()(["--input", "a", "--method", "gradcam"])
    assert "unknown method 'gradcam'; choose from 'clip-es'" in capsys.readouterr().err


def test_params_use_the_config_file_names():
    p = params(LabelJobConfig(input="a", concurrency=(1, 4)))
    assert p["concurrency"] == "1,4" and p["post.bg_power"] == 1.0 and p["post.crf.iters"] == 10
    assert p["method"] == "excel" and p["excel.box_threshold"] == 0.79 and p["input"] == "a"
    assert set(settings_dict(LabelJobConfig(input="a"))) >= {"input", "method", "excel", "post"}


def test_training_settings_resolve_and_reject_unknown_keys(tmp_path):
    (tmp_path / "t.yaml").write_text("loss: ce\nepochs: 3\n")
    assert resolve(TrainConfig, {"lr": 0.01}, tmp_path / "t.yaml") == TrainConfig(loss="ce", epochs=3, lr=0.01)
    with pytest.raises(ValueError, match="unknown training settings \\['los'\\]"):
        resolve(TrainConfig, {"los": "ce"})
    with pytest.raises(ValueError, match="loss must be one of \\['cgl', 'ce'\\]"):
        resolve(TrainConfig, {"loss": "dice"})
