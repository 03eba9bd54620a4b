import numpy as np
import torch

from wsss_ray.cam import caa
from wsss_ray.cam.caa import affinity, refine
from wsss_ray.cam.gradcam import minmax


def box_mask(cam: np.ndarray, threshold: float = 0.4) -> np.ndarray:
    """caa.box_masks of one numpy map."""
    return caa.box_masks(torch.from_numpy(np.asarray(cam, np.float32))[None], threshold)[0].numpy()


def _random_attention(n_tokens, seed, blocks=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n_tokens, n_tokens, generator=g).softmax(-1) for _ in range(blocks)]


def test_affinity_symmetric_nonnegative():
    aff = affinity(_random_attention(1 + 12, seed=0))
    assert aff.shape == (12, 12) and aff.dtype == torch.float32
    torch.testing.assert_close(aff, aff.T)
    assert (aff >= 0).all()


def test_affinity_known_answers():
    n = 6
    # uniform attention: Sinkhorn keeps 1/n everywhere, and (J/n)^2 = J/n
    uniform = torch.full((n, n), 1 / n)
    torch.testing.assert_close(affinity(uniform), uniform)
    # identity attention (class token dropped from the (1+n)x(1+n) maps) stays the identity
    eye = torch.eye(1 + n)
    torch.testing.assert_close(affinity([eye, eye]), torch.eye(n))
    # without Sinkhorn and power, the result is the symmetrised block average
    maps = _random_attention(1 + n, seed=1)
    mean = torch.stack([m[1:, 1:] for m in maps]).mean(0)
    torch.testing.assert_close(affinity(maps, sinkhorn_iters=0, power=1), (mean + mean.T) / 2)
    sym = (mean + mean.T) / 2
    torch.testing.assert_close(affinity(maps, sinkhorn_iters=0, power=2), sym @ sym)


def test_affinity_sinkhorn_is_nearly_doubly_stochastic():
    aff = affinity(_random_attention(1 + 10, seed=2), sinkhorn_iters=50, power=1)
    torch.testing.assert_close(aff.sum(0), torch.ones(10), atol=1e-4, rtol=0)
    torch.testing.assert_close(aff.sum(1), torch.ones(10), atol=1e-4, rtol=0)


def _two_blob_cam():
    cam = np.zeros((6, 8), np.float32)
    # blob A: an L shape, bbox rows 1-2, cols 1-3
    cam[1, 1] = 1.0
    cam[2, 1:4] = 0.9
    # blob B: two diagonal pixels (8-connected), bbox rows 4-5, cols 5-6
    cam[4, 5] = 0.8
    cam[5, 6] = 0.7
    # below 0.4 * max: ignored
    cam[0, 7] = 0.3
    cam[5, 0] = 0.39
    return cam


def test_box_mask_union_of_bounding_boxes():
    expected = np.zeros((6, 8), bool)
    expected[1:3, 1:4] = True
    expected[4:6, 5:7] = True
    assert np.array_equal(box_mask(_two_blob_cam(), 0.4), expected)


def test_box_mask_threshold_and_empty():
    cam = _two_blob_cam()
    # at 0.85 of the max only blob A's 1.0 and 0.9 pixels pass: same bbox as before, blob B gone
    expected = np.zeros((6, 8), bool)
    expected[1:3, 1:4] = True
    assert np.array_equal(box_mask(cam, 0.85), expected)
    assert not box_mask(np.zeros((4, 4), np.float32)).any()


def test_refine_with_identity_affinity_is_masked_cam():
    cam = torch.from_numpy(_two_blob_cam())[None]
    out = refine(cam, torch.eye(48), box_threshold=0.4)
    box = torch.from_numpy(box_mask(_two_blob_cam(), 0.4))
    torch.testing.assert_close(out, minmax(cam * box))
    assert out[0, 0, 7] == 0 and out[0, 5, 0] == 0  # sub-threshold mass outside the boxes is dropped


def test_refine_ignores_mass_outside_the_box():
    """CAM mass outside the box is zeroed before propagation, so a sub-threshold spike
    outside it cannot change the result, whatever the affinity."""
    cam = torch.zeros(2, 6, 8)
    cam[0, 1:3, 1:3] = torch.tensor([[1.0, 0.8], [0.7, 0.9]])
    cam[1, 3:5, 4:7] = 0.6
    cam[1, 4, 5] = 1.0
    spiked = cam.clone()
    spiked[0, 5, 7] = 0.35
    spiked[1, 0, 0] = 0.3
    aff = affinity(_random_attention(1 + 48, seed=3))
    out = refine(cam, aff)
    torch.testing.assert_close(refine(spiked, aff), out)
    assert out.shape == (2, 6, 8)
    # and it is cam' = T · vec(cam * box), min-max normalised
    boxes = torch.stack([torch.from_numpy(box_mask(c)) for c in cam.numpy()]).float()
    manual = ((cam * boxes).reshape(2, -1) @ aff.T).reshape(2, 6, 8)
    torch.testing.assert_close(out, minmax(manual))
    assert out.amin(dim=(1, 2)).abs().max() < 1e-6 and torch.allclose(out.amax(dim=(1, 2)), torch.ones(2), atol=1e-5)


def test_refine_spreads_along_affinity():
    """With an affinity linking patch 0 to patch 5 only, mass at patch 0 moves to patch 5."""
    n = 6
    aff = torch.eye(n)
    aff[5, 0] = aff[0, 5] = 1.0
    aff[0, 0] = 0.0
    cam = torch.zeros(1, 2, 3)
    cam[0, 0, 0] = 1.0  # box = patch 0 only
    out = refine(cam, aff)
    expected = torch.zeros(1, 2, 3)
    expected[0, 1, 2] = 1.0  # patch 5
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_refine_no_classes():
    cams = torch.zeros(0, 3, 3)
    assert refine(cams, torch.eye(9)).shape == (0, 3, 3)


def _scipy_box_mask(cam: np.ndarray, threshold: float) -> np.ndarray:
    """The reference's box region with scipy's labelling: the oracle for caa.box_masks."""
    from scipy import ndimage

    out = np.zeros(cam.shape, bool)
    cam8 = (cam * 255).astype(np.uint8)
    labelled, _ = ndimage.label(cam8 > int(threshold * cam8.max()), structure=np.ones((3, 3), int))
    for region in ndimage.find_objects(labelled):
        if region is not None:
            out[region] = True
    return out


def test_box_masks_in_torch_equal_scipys_labelling():
    rng = np.random.default_rng(0)
    for trial in range(200):
        gh, gw = (int(v) for v in rng.integers(1, 40, 2))
        noise = torch.from_numpy(rng.random((int(rng.integers(1, 4)), 1, gh, gw)).astype(np.float32))
        smooth = torch.nn.functional.avg_pool2d(noise, 3, 1, 1)[:, 0]        # blobs: many regions, some merged
        lo, hi = smooth.amin((1, 2), keepdim=True), smooth.amax((1, 2), keepdim=True)
        cams = (smooth - lo) / (hi - lo + 1e-7)
        if trial % 7 == 0:
            cams[0] = 0                                                      # an empty map: no box
        threshold = float(rng.choice([0.2, 0.4, 0.6]))
        want = np.stack([_scipy_box_mask(c, threshold) for c in cams.numpy()])
        np.testing.assert_array_equal(caa.box_masks(cams, threshold).numpy(), want)

