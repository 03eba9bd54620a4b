import numpy as np
import pytest

from wsss_ray.labeler import LabelConfig, Labeler, label_batch
from wsss_ray.labelset import load_labelset
from wsss_ray.masks import cams_to_probs, probs_to_mask
from wsss_ray.toyworld import render



@pytest.fixture(scope="module")
def labeler(tiny_clip):
    return Labeler(tiny_clip, load_labelset("toyworld"))


@pytest.fixture(scope="module")
def batch():
    square = render(2_000_001, 64)
    wide = render(2_000_002, 80)  # cropped to 48x80: a second size in the same batch
    return [square.image, np.ascontiguousarray(wide.image[:48])], [["cow", "boat"], ["car"]]


def _allowed(labeler, labels):
    return {0, 255} | {labeler.labelset.index(l) + 1 for l in labels}


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
    # default confidence_threshold 0.95: a pixel is kept only if its confidence is >= round(0.95*255)
    for r in results:
        kept = r.mask != 255
        assert (r.confidence[kept] >= 242).all()


def test_label_without_crf_is_cams_to_mask(tiny_clip, batch):
    """With the CRF off, the mask is exactly probs_to_mask(cams_to_probs(cams))."""
    cfg = LabelConfig(crf=False, confidence_threshold=None, bg_power=2.0)
    lab = Labeler(tiny_clip, load_labelset("toyworld"), cfg)
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
    lab = Labeler(tiny_clip, load_labelset("toyworld"), LabelConfig(scales=(1.0, 0.5), caa=False, crf=False))
    images, labels = batch
    cams = lab.cams(images, labels)
    assert [c.shape for c in cams] == [(2, 64, 64), (1, 48, 80)]
    for c in cams:
        assert c.min() >= 0 and c.max() <= 1 + 1e-6


def test_caa_layers_default(labeler):
    assert labeler.caa_layers == 3  # ceil(4 blocks * 2/3)


def test_unknown_label_names_the_labelset(labeler, batch):
    images, _ = batch
    with pytest.raises(KeyError, match="toyworld") as e:
        labeler.label(images[:1], [["unicorn"]])
    assert "unicorn" in str(e.value)


def test_label_batch(tiny_clip, batch):
    images, labels = batch
    masks, confidences = label_batch(images, labels, "toyworld", tiny_clip, LabelConfig(crf=False))
    assert len(masks) == len(confidences) == 2
    assert [m.shape for m in masks] == [(64, 64), (48, 80)]
    assert [c.shape for c in confidences] == [(64, 64), (48, 80)]
