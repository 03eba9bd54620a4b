import numpy as np
import pytest

from wsss_ray.config import CrfConfig
from wsss_ray.crf import dense_crf

EDGE = 20  # true colour edge: columns < 20 are red (class 1), the rest blue (class 2)


def _two_colour_scene(size=40, shift=6, noise_seed=0):
    """Red left half / blue right half; class probabilities whose boundary sits `shift` pixels
    too far right and is soft (logistic over ~4 px), as an upsampled CAM would be."""
    rng = np.random.default_rng(noise_seed)
    image = np.zeros((size, size, 3), np.uint8)
    image[:, :EDGE] = (220, 30, 30)
    image[:, EDGE:] = (30, 40, 210)
    image = np.clip(image.astype(np.int16) + rng.integers(-3, 4, image.shape), 0, 255).astype(np.uint8)
    x = np.arange(size, dtype=np.float32)
    p_left = 1 / (1 + np.exp((x - (EDGE + shift)) / 2.0))
    p_left = np.broadcast_to(0.1 + 0.8 * p_left, (size, size))  # never fully sure
    bg = np.full((size, size), 0.05, np.float32)
    probs = np.stack([bg, p_left * 0.95, (1 - p_left) * 0.95]).astype(np.float32)
    truth = np.where(np.arange(size) < EDGE, 1, 2)[None].repeat(size, 0)
    return image, probs / probs.sum(0, keepdims=True), truth


# deeplab-pytorch's CRF settings, which the CLIP-ES reference uses: gauss 1/3, bilateral 67/3/4
REFERENCE = CrfConfig(iters=10, gauss_sxy=1, gauss_compat=3, bilateral_sxy=67, bilateral_srgb=3, bilateral_compat=4)


def test_crf_snaps_to_the_colour_edge():
    image, probs, truth = _two_colour_scene()
    before = (probs.argmax(0) == truth).mean()
    assert before < 0.9  # the blurred map is off by several columns
    after = (dense_crf(image, probs, REFERENCE).argmax(0) == truth).mean()
    assert after >= 0.97
    assert after > before


def test_crf_defaults_move_towards_the_colour_edge():
    image, probs, truth = _two_colour_scene()
    before = (probs.argmax(0) == truth).mean()
    after = (dense_crf(image, probs).argmax(0) == truth).mean()
    assert after > before


def test_crf_output_is_a_distribution():
    image, probs, _ = _two_colour_scene(size=24)
    out = dense_crf(image, probs, CrfConfig(iters=3))
    assert out.shape == probs.shape and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(0), 1, atol=1e-4)
    assert (out >= 0).all()


def test_crf_single_class_is_certain():
    image, probs, _ = _two_colour_scene(size=16)
    out = dense_crf(image, probs[:1])
    assert out.shape == (1, 16, 16) and np.all(out == 1)


def test_crf_rejects_bad_inputs():
    image, probs, _ = _two_colour_scene(size=16)
    with pytest.raises(ValueError, match="uint8"):
        dense_crf(image.astype(np.float32), probs)
    with pytest.raises(ValueError):
        dense_crf(image[..., :2], probs)
    with pytest.raises(ValueError, match="CxHxW"):
        dense_crf(image, probs[:, :8])
    with pytest.raises(ValueError):
        dense_crf(image, probs[0])
