import dataclasses
import sys

import numpy as np
import pytest
import torch

from wsss_ray.config import CrfConfig
from wsss_ray.crf import dense_crf, on_device
from wsss_ray.lattice import PermutohedralLattice, grid_factor

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


def _disc_scene(size=256, seed=0):
    """A noisy red disc on a textured green/blue background, with a CAM-like blurred, offset disc map."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size * 0.45) ** 2 + (xx - size * 0.5) ** 2 < (size * 0.25) ** 2
    image = np.where(disc[..., None], (200, 40, 40), (40, 150, 90)).astype(np.int16)
    image[:, size // 2:] += (0, -60, 90) * ~disc[:, size // 2:, None]
    image = np.clip(image + rng.integers(-6, 7, image.shape), 0, 255).astype(np.uint8)
    blurred = 1 / (1 + np.exp(((yy - size * 0.5) ** 2 + (xx - size * 0.55) ** 2 - (size * 0.22) ** 2) / (size * 6)))
    probs = np.stack([1 - 0.9 * blurred, 0.9 * blurred]).astype(np.float32) + 0.05
    return image, probs / probs.sum(0, keepdims=True), disc.astype(int)


def test_torch_backend_matches_pydensecrf_at_full_resolution():
    image, probs, truth = _two_colour_scene()
    ref = dense_crf(image, probs, dataclasses.replace(REFERENCE, backend="pydensecrf"))
    out = dense_crf(image, probs, dataclasses.replace(REFERENCE, backend="torch", downsample=1))
    assert (out.argmax(0) == ref.argmax(0)).mean() >= 0.99
    assert np.abs(out - ref).mean() < 0.05
    np.testing.assert_allclose(out.sum(0), 1, atol=1e-4)


def test_torch_backend_on_a_coarse_grid_agrees_with_pydensecrf():
    image, probs, truth = _disc_scene()
    assert grid_factor(*image.shape[:2], 4) == 4
    ref = dense_crf(image, probs, dataclasses.replace(REFERENCE, backend="pydensecrf")).argmax(0)
    out = dense_crf(image, probs, dataclasses.replace(REFERENCE, backend="torch", downsample=4)).argmax(0)
    assert (out == ref).mean() >= 0.98
    before = (probs.argmax(0) == truth).mean()
    assert (out == truth).mean() > before and (ref == truth).mean() > before


def test_default_backend_is_chosen_per_device():
    assert CrfConfig().backend == "auto"
    assert on_device(CrfConfig(), "cpu").backend == "pydensecrf"
    assert on_device(CrfConfig(), None).backend == "pydensecrf"
    for device in ("cuda", "cuda:1", torch.device("cuda", 0)):
        gpu = on_device(CrfConfig(), device)
        assert (gpu.backend, gpu.downsample) == ("torch", 1)
    assert on_device(CrfConfig(backend="torch"), "cpu") == CrfConfig(backend="torch")  # a named backend stays
    assert on_device(CrfConfig(backend="pydensecrf"), "cuda").backend == "pydensecrf"


def test_the_gpu_choice_keeps_the_reference_confident_set():
    """`auto` on a GPU (the lattice at full resolution) thresholds at 0.95 as pydensecrf does;
    the coarse grid's argmax agrees too, but its confident set is smaller."""
    image, probs, _ = _disc_scene()
    ref = dense_crf(image, probs, dataclasses.replace(REFERENCE, backend="pydensecrf"))
    full = dense_crf(image, probs, on_device(dataclasses.replace(REFERENCE, backend="auto"), "cuda"))
    coarse = dense_crf(image, probs, dataclasses.replace(REFERENCE, backend="torch", downsample=4))

    def thresholded(m):
        return np.where(m.max(0) < 0.95, 255, m.argmax(0))

    assert (thresholded(full) == thresholded(ref)).mean() >= 0.99
    assert (thresholded(coarse) == thresholded(ref)).mean() < (thresholded(full) == thresholded(ref)).mean()


def test_auto_without_pydensecrf_falls_back_to_the_torch_lattice(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf", None)  # any import of it now fails
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    image, probs, _ = _two_colour_scene(size=24)
    with pytest.warns(UserWarning, match="pydensecrf"):
        out = dense_crf(image, probs)
    np.testing.assert_allclose(out, dense_crf(image, probs, CrfConfig(backend="torch")))
    with pytest.raises(ImportError):
        dense_crf(image, probs, CrfConfig(backend="pydensecrf"))


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="crf backend must be one of"):
        CrfConfig(backend="densecrf")
    with pytest.raises(ValueError, match="downsample"):
        CrfConfig(downsample=0)
    with pytest.raises(ValueError, match=r"post.crf.final_step must be one of \['marginals', 'messages'\]"):
        CrfConfig(final_step="message")


@pytest.mark.parametrize("size, downsample, factor", [((375, 500), 4, 4), ((213, 320), 4, 3), ((64, 64), 4, 1),
                                                      ((1000, 800), 1, 1), ((127, 900), 8, 1)])
def test_grid_factor_keeps_small_images_at_full_size(size, downsample, factor):
    assert grid_factor(*size, downsample) == factor


@pytest.mark.parametrize("d, least_correlation", [(2, 0.98), (5, 0.9)])
def test_lattice_filter_approximates_the_gaussian(d, least_correlation):
    """Normalised as the CRF uses it, the lattice filter follows the exact Gaussian sum."""
    g = torch.Generator().manual_seed(d)
    features = torch.randn(400, d, generator=g) * 2
    values = torch.rand(400, 2, generator=g)
    kernel = torch.exp(-torch.cdist(features, features) ** 2 / 2)
    lattice = PermutohedralLattice(features)
    norm = lattice.filter(torch.ones(400, 1)).rsqrt()
    exact_norm = kernel.sum(1, keepdim=True).rsqrt()
    approx = norm * lattice.filter(norm * values)
    exact = exact_norm * (kernel @ (exact_norm * values))
    assert torch.corrcoef(torch.stack([approx.flatten(), exact.flatten()]))[0, 1] > least_correlation
    # points at one place: the filter sums them (up to the lattice's constant scale)
    same = PermutohedralLattice(torch.zeros(10, d)).filter(torch.ones(10, 1))
    torch.testing.assert_close(same, torch.full_like(same, float(same[0])))
