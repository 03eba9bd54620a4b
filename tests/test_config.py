import pytest

from wsss_ray.config import flatten, label_config_from_dict, load_label_config
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
