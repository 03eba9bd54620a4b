import math

import numpy as np
import pytest

from wsss_ray.metrics import average_precision, confusion_matrix, fill_ignored, scores


def test_confusion_matrix_hand_example():
    gt = np.array([[0, 1, 2], [2, 2, 1]], np.uint8)
    pred = np.array([[0, 2, 2], [1, 2, 1]], np.uint8)
    # rows = gt, cols = pred
    expected = np.array([[1, 0, 0],
                         [0, 1, 1],
                         [0, 1, 2]])
    hist = confusion_matrix(gt, pred, 3)
    assert hist.dtype == np.int64
    assert np.array_equal(hist, expected)


def test_confusion_matrix_skips_ignored_ground_truth():
    gt = np.array([[0, 255, 1], [255, 1, 1]], np.uint8)
    pred = np.array([[0, 1, 1], [0, 0, 1]], np.uint8)
    hist = confusion_matrix(gt, pred, 2)
    assert np.array_equal(hist, [[1, 0], [1, 2]])
    assert hist.sum() == 4


def test_confusion_matrix_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8), 2)


def test_ignored_prediction_raises_and_fill_ignored_fixes_it():
    gt = np.array([0, 1, 1], np.uint8)
    pred = np.array([0, 255, 1], np.uint8)
    with pytest.raises(ValueError, match="255"):
        confusion_matrix(gt, pred, 2)
    filled = fill_ignored(pred)
    assert filled.dtype == np.uint8 and filled.tolist() == [0, 0, 1]
    assert fill_ignored(pred, value=1).tolist() == [0, 1, 1]
    assert np.array_equal(confusion_matrix(gt, filled, 2), [[1, 0], [1, 1]])


def test_scores_hand_values():
    hist = np.array([[1, 0, 0],
                     [0, 1, 1],
                     [0, 1, 2]])
    s = scores(hist)
    # IoU = TP / (gt + pred - TP): c0 1/1, c1 1/(2+2-1), c2 2/(3+3-2)
    np.testing.assert_allclose(s.iou, [1.0, 1 / 3, 1 / 2])
    np.testing.assert_allclose(s.precision, [1.0, 1 / 2, 2 / 3])
    np.testing.assert_allclose(s.recall, [1.0, 1 / 2, 2 / 3])
    assert s.pixel_accuracy == pytest.approx(4 / 6)
    assert s.miou == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)
    d = s.as_dict(["bg", "a", "b"])
    assert d["iou"]["a"] == pytest.approx(1 / 3)
    assert d["miou"] == pytest.approx(s.miou)


def test_class_absent_from_ground_truth_is_nan_and_excluded():
    # class 2 never in gt but predicted once
    hist = np.array([[3, 0, 1],
                     [0, 2, 0],
                     [0, 0, 0]])
    s = scores(hist)
    assert math.isnan(s.iou[2]) and math.isnan(s.recall[2])
    assert s.precision[2] == 0.0
    np.testing.assert_allclose(s.iou[:2], [3 / 4, 1.0])
    assert s.miou == pytest.approx((3 / 4 + 1) / 2)
    assert s.as_dict()["iou"]["2"] is None


@pytest.mark.filterwarnings("ignore:Mean of empty slice")
def test_empty_histogram_is_nan():
    s = scores(np.zeros((2, 2), np.int64))
    assert np.isnan(s.iou).all()
    assert math.isnan(s.pixel_accuracy) and math.isnan(s.miou)


def test_average_precision_hand_examples():
    assert average_precision(np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.2, 0.1])) == 1.0
    # hits at ranks 1 and 3: (1/1 + 2/3) / 2
    assert average_precision(np.array([1, 0, 1]), np.array([0.9, 0.8, 0.1])) == pytest.approx((1 + 2 / 3) / 2)
    # worst ranking: hits at ranks 3 and 4: (1/3 + 2/4) / 2
    assert average_precision(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9])) == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert math.isnan(average_precision(np.array([0, 0]), np.array([0.5, 0.4])))
