"""The quality score: its signals on hand-built probability maps, its linear models, its settings."""

import numpy as np
import pytest

from wsss_ray.config import IMAGE_SIGNALS, LABEL_SIGNALS, LabelJobConfig, QualityConfig, params, resolve_label_job
from wsss_ray.quality import linear, mask_quality, signals


def _maps(labels_grid: np.ndarray, confidence: float, classes: int) -> np.ndarray:
    """(classes)xHxW probabilities whose argmax is `labels_grid`, with `confidence` at the argmax."""
    rest = (1 - confidence) / (classes - 1)
    out = np.full((classes, *labels_grid.shape), rest, np.float32)
    for k in range(classes):
        out[k][labels_grid == k] = confidence
    return out


def test_signals_of_hand_built_maps_have_their_known_values():
    before = np.zeros((4, 4), int)
    before[:2, :2] = 1          # label 1: a 2x2 block before the CRF
    after = before.copy()
    after[:2, :3] = 1           # the CRF grows it to 2x3 ...
    after[3, 3] = 2             # ... and finds one pixel of label 2, which had none
    probs, marginals = _maps(before, 0.6, 3), _maps(after, 0.9, 3)
    image, per_label = signals(probs, marginals)
    assert set(image) == set(IMAGE_SIGNALS) and all(set(p) == set(LABEL_SIGNALS) for p in per_label)
    assert image["confidence_mean"] == pytest.approx(0.9)
    assert image["confidence_above_0.95"] == 0.0
    assert image["margin_mean"] == pytest.approx(0.85)
    assert image["crf_changed"] == pytest.approx(3 / 16)   # two pixels joined label 1, one became label 2
    assert image["background"] == pytest.approx(9 / 16)
    assert image["labels"] == 2
    one, two = per_label
    assert one["area"] == pytest.approx(6 / 16) and two["area"] == pytest.approx(1 / 16)
    assert one["kept_by_crf"] == pytest.approx(4 / 6) and two["kept_by_crf"] == 0.0
    assert one["agreement"] == pytest.approx(4 / 6) and two["agreement"] == 0.0
    assert one["prob_mean"] == pytest.approx((4 * 0.6 + 12 * 0.2) / 16)
    assert one["missing"] == two["missing"] == 0.0
    assert image["label_agreement"] == pytest.approx(2 / 6)
    assert image["label_confidence_min"] == pytest.approx(0.9)


def test_a_label_the_crf_drops_is_missing_and_an_image_without_labels_has_no_label_scores():
    grid = np.zeros((5, 5), int)
    _, per_label = signals(_maps(grid, 0.7, 2), _maps(grid, 0.99, 2))
    assert per_label[0]["missing"] == 1.0 and per_label[0]["confidence_in_region"] == 0.0
    image, per_label = signals(np.ones((1, 3, 3), np.float32), np.ones((1, 3, 3), np.float32))
    assert per_label == [] and image["labels"] == 0 and image["confidence_mean"] == 1.0
    with pytest.raises(ValueError, match="same grid"):
        signals(np.ones((2, 3, 3)), np.ones((2, 4, 4)))


def test_the_linear_models_are_clipped_to_the_unit_interval_and_refuse_unknown_signals():
    assert linear({"a": 2.0, "b": 1.0}, {"a": 0.25}, 0.1) == pytest.approx(0.6)
    assert linear({"a": 2.0}, {"a": 5.0}, 0.0) == 1.0 and linear({"a": 2.0}, {"a": -5.0}, 0.0) == 0.0
    with pytest.raises(ValueError, match="unknown signals"):
        linear({"a": 1.0}, {"b": 1.0}, 0.0)
    config = QualityConfig(weights={"confidence_mean": 1.0}, bias=-0.5, label_weights={"area": 2.0}, label_bias=0.0)
    grid = np.zeros((4, 4), int)
    grid[:, :2] = 1
    quality, label_quality = mask_quality(_maps(grid, 0.8, 2), _maps(grid, 0.8, 2), config)
    assert quality == pytest.approx(0.3) and label_quality == [pytest.approx(1.0)]


def test_the_quality_settings_resolve_like_every_other_and_name_a_bad_signal():
    config = resolve_label_job({"post.quality.bias": 0.5})
    assert config.post.quality.bias == 0.5 and config.post.quality.weights == QualityConfig().weights
    assert set(QualityConfig().weights) == set(IMAGE_SIGNALS) and set(QualityConfig().label_weights) == set(LABEL_SIGNALS)
    with pytest.raises(ValueError, match="post.quality.weights signals"):
        QualityConfig(weights={"sharpness": 1.0})
    assert params(LabelJobConfig())["post.quality.weights.confidence_mean"] == QualityConfig().weights["confidence_mean"]
