"""The background offset fitted by prior matching, and the CRF at prediction."""

import numpy as np
import pytest
import torch

from wsss_ray.train.refine import OFFSETS, fit_offset, foreground_counts, probabilities


def _logits(margins: list[float]) -> torch.Tensor:
    """3x1xN logits whose best object class beats background by each margin."""
    n = len(margins)
    out = torch.zeros(3, 1, n)
    out[1, 0] = torch.tensor(margins)
    out[2, 0] = torch.tensor(margins) - 1.0
    return out


def test_foreground_counts_per_offset():
    counts = foreground_counts(_logits([0.5, -0.3, -0.9, -2.5]))
    at = dict(zip(OFFSETS.tolist(), counts))
    assert (at[0.0], at[0.25], at[0.5], at[1.0], at[2.0], at[3.0]) == (1, 1, 2, 3, 3, 4)
    known = np.array([[True, False, True, True]])
    assert dict(zip(OFFSETS.tolist(), foreground_counts(_logits([0.5, -0.3, -0.9, -2.5]), known)))[1.0] == 2


def test_fit_offset_matches_the_masks_foreground_share():
    logits = _logits([0.5, -0.3, -0.9, -2.5])
    counts = foreground_counts(logits)
    assert fit_offset(counts, mask_foreground=1, pixels=4) == 0.0
    assert fit_offset(counts, mask_foreground=2, pixels=4) == 0.375   # the first offset past 0.3
    assert fit_offset(counts, mask_foreground=3, pixels=4) == 1.0
    assert fit_offset(counts, mask_foreground=4, pixels=4) == 2.625
    assert fit_offset(counts, mask_foreground=0, pixels=0) == 0.0


def test_probabilities_apply_the_offset_then_the_crf():
    image = np.zeros((16, 16, 3), np.uint8)
    image[:, 8:] = 255                                  # two flat halves
    logits = torch.zeros(2, 16, 16)
    logits[0, :, :8] = 2.0
    logits[1, :, 8:] = 2.0
    logits[1, 3, 2] = 2.6                               # a speck on the dark half
    plain = probabilities(logits, image)
    assert plain.shape == (2, 16, 16) and np.allclose(plain.sum(0), 1, atol=1e-5)
    assert plain[:, 3, 2].argmax() == 1
    shifted = probabilities(logits, image, offset=1.0)
    assert shifted[1, 0, 0] == pytest.approx(1 / (1 + np.exp(1.0)), abs=1e-5)    # softmax of (2 - 1, 0)
    refined = probabilities(logits, image, refine="crf")
    assert refined[:, 3, 2].argmax() == 0 and (refined[:, :, 8:].argmax(0) == 1).all()
    with pytest.raises(ValueError, match="refine must be one of"):
        probabilities(logits, image, refine="dense")


def test_the_offset_is_fitted_on_the_first_training_rows_by_id(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from wsss_ray.config import TrainConfig
    from wsss_ray.store import OUTPUT_SCHEMA
    from wsss_ray.train.trainer import calibration_rows

    (tmp_path / "in").mkdir()
    for part, ids in enumerate([["d", "a", "e"], ["c", "b"]]):
        rows = {c: [None] * len(ids) for c in OUTPUT_SCHEMA.names}
        rows.update(id=ids, image=[f"{i}.png" for i in ids], mask=[i.encode() for i in ids],
                    status=["error" if i == "b" else "ok" for i in ids])
        pq.write_table(pa.table(rows, schema=OUTPUT_SCHEMA), tmp_path / "in" / f"part-{part}.parquet")
    config = TrainConfig(input=str(tmp_path / "in"), calibration_images=3)
    assert calibration_rows(config, {}) == [("a.png", b"a"), ("c.png", b"c"), ("d.png", b"d")]
    assert calibration_rows(config, {"b": b"fixed"}) == [("a.png", b"a"), ("b.png", b"fixed"), ("c.png", b"c")]
    assert calibration_rows(TrainConfig(input=str(tmp_path / "in"), background_offset=0.5), {}) == []
