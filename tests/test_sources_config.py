import json

import numpy as np
import pytest
from PIL import Image

from wsss_ray.config import label_config_from_dict, label_config_to_dict, load_label_config
from wsss_ray.labeler import LabelConfig
from wsss_ray.sources import load_image, read_manifest


def test_read_manifest_resolves_relative_paths(tmp_path):
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"id": "a", "image": "img/a.png", "labels": ["cow"], "mask": "masks/a.png"}) + "\n\n"
        + json.dumps({"id": "b", "image": "/abs/b.png", "labels": []}) + "\n")
    items = read_manifest(tmp_path / "m.jsonl")
    assert [i.id for i in items] == ["a", "b"]
    assert items[0].image == str(tmp_path / "img/a.png") and items[0].mask == str(tmp_path / "masks/a.png")
    assert items[1].image == "/abs/b.png" and items[1].mask is None


def test_malformed_manifest_line_is_named(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"id": "a", "image": "a.png", "labels": []}\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl:2"):
        read_manifest(tmp_path / "m.jsonl")


def test_load_image_applies_exif_orientation_and_rgb(tmp_path):
    arr = np.zeros((10, 20), np.uint8)  # greyscale, 20 wide
    img = Image.fromarray(arr, mode="L")
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "r.jpg", exif=exif.tobytes())
    out = load_image(str(tmp_path / "r.jpg"))
    assert out.shape == (20, 10, 3) and out.dtype == np.uint8


def test_label_config_overlay_and_round_trip(tmp_path):
    (tmp_path / "c.yaml").write_text("bg_power: 2\nscales: [1.0, 2.0]\ncrf_config: {iters: 5}\n")
    cfg = load_label_config(tmp_path / "c.yaml")
    assert cfg.bg_power == 2 and cfg.scales == (1.0, 2.0) and cfg.crf_config.iters == 5
    assert cfg.crf_config.bilateral_sxy == LabelConfig().crf_config.bilateral_sxy
    flat = label_config_to_dict(cfg)
    assert flat["crf_config.iters"] == 5 and flat["bg_power"] == 2


def test_unknown_label_setting_is_rejected():
    with pytest.raises(ValueError, match="bg_thr"):
        label_config_from_dict({"bg_thr": 0.5})
    with pytest.raises(ValueError, match="sxy"):
        label_config_from_dict({"crf_config": {"sxy": 3}})
