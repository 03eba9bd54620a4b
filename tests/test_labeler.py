import numpy as np
import pytest
import torch

from wsss_ray.cam import ClipES
from wsss_ray.config import ClipESConfig, CrfConfig, LabelJobConfig, PostConfig
from wsss_ray.labeler import Labeler
from wsss_ray.labelset import load_labelset
from wsss_ray.masks import cams_to_probs, probs_to_mask
from wsss_ray.toyworld import render


@pytest.fixture(scope="module")
def labeler(tiny_clip):
    return Labeler(ClipES(ClipESConfig(), tiny_clip, load_labelset("toyworld")))


@pytest.fixture(scope="module")
def batch():
    square = render(2_000_001, 64)
    wide = render(2_000_002, 80)  # cropped to 48x80: a second size in the same batch
    return [square.image, np.ascontiguousarray(wide.image[:48])], [["cow", "boat"], ["car"]]


def _allowed(labeler, labels):
    return {0} | {labeler.labelset.index(l) + 1 for l in labels}


def test_label_outputs(labeler, batch):
    images, labels = batch
    results = labeler.label(images, labels)
    assert len(results) == 2
    for image, lab, r in zip(images, labels, results):
        h, w = image.shape[:2]
        assert r.mask.shape == (h, w) and r.mask.dtype == np.uint8
        assert r.confidence.shape == (h, w) and r.confidence.dtype == np.uint8
        assert set(np.unique(r.mask).tolist()) <= _allowed(labeler, lab)
        assert r.cams.shape == (len(lab), h, w) and r.cams.dtype == np.float32
        assert r.cams.min() >= 0 and r.cams.max() <= 1
    # the mask is the full argmax: no pixel is left out, whatever its confidence
    assert any((r.confidence < 242).any() for r in results) and all(255 not in r.mask for r in results)


def test_label_without_crf_is_cams_to_mask(tiny_clip, batch):
    """With the CRF off, the mask is exactly probs_to_mask(cams_to_probs(cams))."""
    lab = Labeler(ClipES(ClipESConfig(), tiny_clip, load_labelset("toyworld")),
                  PostConfig(bg_power=2.0, crf=CrfConfig(iters=0)))
    images, labels = batch
    for lab_names, r in zip(labels, lab.label(images, labels)):
        mask, conf = probs_to_mask(cams_to_probs(r.cams, 2.0), lab.class_ids(lab_names))
        assert np.array_equal(r.mask, mask) and np.array_equal(r.confidence, conf)
        assert 255 not in r.mask


def test_cams_per_label_and_duplicates(labeler, batch):
    images, _ = batch
    assert labeler.class_ids(["cow", "boat", "cow"]) == [3, 0]
    cams = labeler.cams(images[:1], [["cow", "boat", "cow"]])
    assert cams[0].shape == (2, 64, 64)
    assert labeler.cams(images[:1], [[]])[0].shape == (0, 64, 64)


def test_image_without_labels_is_all_background(labeler, batch):
    images, labels = batch
    results = labeler.label(images, [[], labels[1]])
    assert results[0].cams.shape == (0, 64, 64)
    assert np.array_equal(results[0].mask, np.zeros((64, 64), np.uint8))
    assert (results[0].confidence == 255).all()
    assert results[1].cams.shape == (1, 48, 80)


def test_multiscale_and_no_caa(tiny_clip, batch):
    lab = Labeler(ClipES(ClipESConfig(scales=(1.0, 0.5), caa=False), tiny_clip, load_labelset("toyworld")))
    images, labels = batch
    cams = lab.cams(images, labels)
    assert [c.shape for c in cams] == [(2, 64, 64), (1, 48, 80)]
    for c in cams:
        assert c.min() >= 0 and c.max() <= 1 + 1e-6


def test_caa_layers_default(labeler):
    assert labeler.method.caa_layers == 3  # ceil(4 blocks * 2/3)


def test_unknown_label_names_the_labelset(labeler, batch):
    images, _ = batch
    with pytest.raises(KeyError, match="toyworld") as e:
        labeler.label(images[:1], [["unicorn"]])
    assert "unicorn" in str(e.value)


def test_from_spec_resolves_settings_as_the_job_does(tiny_dir, batch):
    (tiny_dir / "label_config.yaml").write_text("method: clip-es\nclip_es: {scales: [1.0, 0.5]}\npost: {bg_power: 3}\n")
    try:
        lab = Labeler.from_spec(f"local-dir:{tiny_dir}", "toyworld", settings={"caa": False}, post={"crf": {"iters": 0}})
    finally:
        (tiny_dir / "label_config.yaml").unlink()
    assert lab.method.config == ClipESConfig(scales=(1.0, 0.5), caa=False)  # model's file, then the caller's
    assert lab.post == PostConfig(bg_power=3, crf=CrfConfig(iters=0))
    images, labels = batch
    for lab_names, r in zip(labels, lab.label(images, labels)):
        assert np.array_equal(r.mask, probs_to_mask(cams_to_probs(r.cams, 3), lab.class_ids(lab_names))[0])
    with pytest.raises(ValueError, match="unknown clip_es settings"):
        Labeler.from_spec(f"local-dir:{tiny_dir}", "toyworld", method="clip-es", settings={"caa_on": False})


def test_precision_names(monkeypatch):
    from wsss_ray.labeler import autocast_dtype

    assert autocast_dtype("fp32", "cpu") is None
    assert autocast_dtype("bf16", "cpu") == torch.bfloat16
    assert autocast_dtype("fp16", "cuda") == torch.float16
    assert autocast_dtype("auto", "cuda") is None  # not measured equal on GPUs yet: float32 there
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert autocast_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert autocast_dtype("auto", "cpu") is None
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_dtype("half", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        LabelJobConfig(precision="half")
