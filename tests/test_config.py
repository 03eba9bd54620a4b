from importlib import resources

import pytest

from wsss_ray.config import (PipelineConfig, flatten, label_config_from_dict, load_label_config, params,
                             parse_concurrency, resolve_pipeline_config)
from wsss_ray.labeler import LabelConfig


def test_label_config_overlay_and_round_trip(tmp_path):
    (tmp_path / "c.yaml").write_text("bg_power: 2\nscales: [1.0, 2.0]\ncrf_config: {iters: 5}\n")
    cfg = load_label_config(tmp_path / "c.yaml")
    assert cfg.bg_power == 2 and cfg.scales == (1.0, 2.0) and cfg.crf_config.iters == 5
    assert cfg.crf_config.bilateral_sxy == LabelConfig().crf_config.bilateral_sxy
    flat = flatten(cfg)
    assert flat["crf_config.iters"] == 5 and flat["bg_power"] == 2 and flat["scales"] == "1.0,2.0"


def test_unknown_label_setting_is_rejected():
    with pytest.raises(ValueError, match="bg_thr"):
        label_config_from_dict({"bg_thr": 0.5})
    with pytest.raises(ValueError, match="sxy"):
        label_config_from_dict({"crf_config": {"sxy": 3}})


def _job_parse():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("pseudolabel_job", Path(__file__).parents[1] / "jobs" / "pseudolabel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parse


def test_flags_override_the_config_file_which_overrides_defaults(tmp_path):
    (tmp_path / "run.yaml").write_text(
        "input: a.jsonl\noutput: from-file\nbatch_size: 4\nconcurrency: [1, 3]\nbg_power: 2\n"
        "crf_config: {iters: 3}\n")
    config, uri = _job_parse()(["--config", str(tmp_path / "run.yaml"), "--batch-size", "8", "--no-crf",
                                "--mlflow-uri", "sqlite:///x.db"])
    assert (config.input, config.output, config.batch_size) == ("a.jsonl", "from-file", 8)
    assert config.concurrency == (1, 3) and config.num_gpus is None
    assert (config.label.bg_power, config.label.crf, config.label.crf_config.iters) == (2, False, 3)
    assert config.label.caa is True and config.model == "toyclip"  # untouched defaults
    assert uri == "sqlite:///x.db"
    flags, _ = _job_parse()(["--input", "b.jsonl", "--concurrency", "2,5", "--num-gpus", "1"])
    assert (flags.concurrency, flags.num_gpus, flags.batch_size) == ((2, 5), 1.0, 16)


def test_no_input_is_the_embedded_toy_world_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config, _ = _job_parse()(["--limit", "5"])
    assert config.input.endswith("manifest.jsonl") and (tmp_path / "outputs").is_dir()
    assert config.label == load_label_config(resources.files("wsss_ray").joinpath("configs", "toyworld.yaml"))
    assert config.limit == 5 and config.labelset == "toyworld"


def test_bad_settings_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="batchsize"):
        resolve_pipeline_config({"input": "a", "batchsize": 3})
    with pytest.raises(ValueError, match="concurrency 3,1 is not a range"):
        resolve_pipeline_config({"input": "a", "concurrency": "3,1"})
    assert parse_concurrency("4") == (4, 4) and parse_concurrency([1, 4]) == (1, 4)
    with pytest.raises(SystemExit):
        _job_parse()(["--input", "a", "--concurrency", "one"])
    assert "is not MIN[,MAX]" in capsys.readouterr().err


def test_params_use_the_config_file_names():
    p = params(PipelineConfig(input="a", concurrency=(1, 4)))
    assert p["concurrency"] == "1,4" and p["bg_power"] == 1.0 and p["crf_config.iters"] == 10
    assert "label.bg_power" not in p and p["input"] == "a"
