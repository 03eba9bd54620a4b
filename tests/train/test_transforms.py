import numpy as np
import pytest
import torch

from batches import to_batch

from wsss_ray.train.transforms import IMAGE_PAD, IMAGENET_MEAN, IMAGENET_STD, augment

# label l <-> colour COLOURS[l] and confidence CONF[l], so alignment can be read back from any of the three
COLOURS = np.array([[0, 0, 0], [250, 0, 0], [0, 250, 0], [0, 0, 250], [250, 250, 0]], np.uint8)
CONF = np.array([40, 80, 120, 160, 200], np.uint8)


def _coded(h=45, w=37, block=8, seed=0):
    """Image, mask and confidence built from one random block label map."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(COLOURS), (h // block + 1, w // block + 1))
    mask = np.kron(labels, np.ones((block, block), np.int64))[:h, :w].astype(np.uint8)
    return COLOURS[mask], mask, CONF[mask]


def _interior(mask: torch.Tensor) -> torch.Tensor:
    """Pixels whose 3x3 neighbourhood holds one label (away from label and padding edges)."""
    padded = torch.nn.functional.pad(mask[None, None].float(), (1, 1, 1, 1), mode="replicate")
    win = padded.unfold(2, 3, 1).unfold(3, 3, 1)[0, 0]
    return (win.amax((-1, -2)) == win.amin((-1, -2))) & (mask != 255)


@pytest.mark.parametrize("seed", range(12))
def test_image_mask_confidence_stay_aligned(seed):
    image, mask, conf = _coded(seed=seed)
    img, msk, cf = augment(image, mask, conf, crop=40, rng=np.random.default_rng(seed))
    assert img.shape == (3, 40, 40) and msk.shape == cf.shape == (40, 40)
    assert img.dtype == msk.dtype == cf.dtype == torch.uint8
    padded = msk == 255
    assert torch.equal(padded, cf == 0)
    assert torch.all(img.permute(1, 2, 0)[padded] == torch.tensor(IMAGE_PAD, dtype=torch.uint8))
    assert torch.equal(cf[~padded], torch.as_tensor(CONF)[msk[~padded].long()])
    dist = ((img.permute(1, 2, 0)[:, :, None].float() - torch.as_tensor(COLOURS).float()) ** 2).sum(-1)
    from_colour = dist.argmin(-1)
    inside = _interior(msk)
    assert inside.sum() > 0.15 * (~padded).sum()
    assert torch.equal(from_colour[inside], msk[inside].long())


def test_padding_values():
    image = np.full((10, 12, 3), 7, np.uint8)
    mask, conf = np.ones((10, 12), np.uint8), np.full((10, 12), 200, np.uint8)
    img, msk, cf = augment(image, mask, conf, crop=32, rng=np.random.default_rng(0), scales=(1.0,), flip=False)
    assert torch.all(msk[:10, :12] == 1) and torch.all(cf[:10, :12] == 200) and torch.all(img[:, :10, :12] == 7)
    assert (msk == 255).sum() == 32 * 32 - 120 and (cf == 0).sum() == 32 * 32 - 120
    assert torch.all(img[:, 10:, :].permute(1, 2, 0) == torch.tensor(IMAGE_PAD, dtype=torch.uint8))


def test_flip_flips_all_three():
    image, mask, conf = _coded(h=24, w=24, seed=1)
    seen = set()
    for seed in range(20):
        img, msk, cf = augment(image, mask, conf, crop=24, rng=np.random.default_rng(seed), scales=(1.0,))
        flipped = not torch.equal(msk, torch.as_tensor(mask))
        dims = [-1] if flipped else []
        assert torch.equal(img, torch.as_tensor(image).permute(2, 0, 1).flip(dims))
        assert torch.equal(msk, torch.as_tensor(mask).flip(dims))
        assert torch.equal(cf, torch.as_tensor(conf).flip(dims))
        seen.add(flipped)
    assert seen == {True, False}


def test_to_batch_train_is_deterministic_by_seed():
    rows = [_coded(seed=s) for s in range(3)]
    a = to_batch(rows, crop=32, train=True, rng=np.random.default_rng(5))
    b = to_batch(rows, crop=32, train=True, rng=np.random.default_rng(5))
    c = to_batch(rows, crop=32, train=True, rng=np.random.default_rng(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    images, masks, conf = a
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert masks.shape == (3, 32, 32) and masks.dtype == torch.int64
    assert conf.shape == (3, 32, 32) and conf.dtype == torch.float32 and 0 <= conf.min() and conf.max() <= 1


def test_to_batch_eval_only_normalises():
    image = np.full((6, 8, 3), 51, np.uint8)  # 0.2 after /255
    mask = np.arange(48, dtype=np.uint8).reshape(6, 8)
    images, masks, conf = to_batch([(image, mask, np.full((6, 8), 255, np.uint8)), (image, mask, None)])
    expected = torch.tensor([(0.2 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(3, 1, 1)
    torch.testing.assert_close(images, expected.expand(2, 3, 6, 8), atol=1e-5, rtol=1e-5)
    assert torch.equal(masks, torch.as_tensor(mask).long().expand(2, 6, 8))
    assert torch.equal(conf, torch.ones(2, 6, 8))


def test_to_batch_errors():
    a, b = _coded(h=10, w=10), _coded(h=12, w=10)
    with pytest.raises(ValueError, match="differ in size"):
        to_batch([a, b])
    with pytest.raises(ValueError, match="needs a crop size"):
        to_batch([a], train=True)
    with pytest.raises(ValueError, match="does not match image"):
        to_batch([(a[0], b[1], None)])
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        to_batch([(a[0].astype(np.float32), a[1], None)])
