import io

import numpy as np
import pytest
from PIL import Image

from wsss_ray.masks import (PALETTE, cams_to_probs, colorize, decode_png, encode_png, overlay, overlay_grid,
                            ignore_below, probs_to_mask)


@pytest.mark.parametrize("palette", [True, False])
def test_png_round_trip_is_bit_exact(rng, palette):
    mask = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    mask[0, 0], mask[-1, -1] = 255, 0
    out = decode_png(encode_png(mask, palette=palette))
    assert out.dtype == np.uint8
    assert np.array_equal(out, mask)


def test_png_is_single_channel_palette():
    mask = np.array([[0, 1, 2], [255, 3, 0]], np.uint8)
    img = Image.open(io.BytesIO(encode_png(mask)))
    assert img.mode == "P"
    assert len(img.getbands()) == 1
    assert img.size == (3, 2)
    assert np.array_equal(np.array(img), mask)
    # the palette colours are attached: index 1 is VOC's dark red
    assert tuple(img.getpalette()[3:6]) == (128, 0, 0)


def test_encode_rejects_non_masks():
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 3), np.uint8))


def test_decode_rgb_png_raises():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8), mode="RGB").save(buf, format="PNG")
    with pytest.raises(ValueError, match="single-channel"):
        decode_png(buf.getvalue())


def test_voc_palette_known_colours():
    assert PALETTE.shape == (256, 3) and PALETTE.dtype == np.uint8
    assert tuple(PALETTE[0]) == (0, 0, 0)
    assert tuple(PALETTE[1]) == (128, 0, 0)
    assert tuple(PALETTE[2]) == (0, 128, 0)
    assert tuple(PALETTE[15]) == (192, 128, 128)  # VOC person
    assert tuple(PALETTE[255]) == (224, 224, 192)
    assert np.array_equal(colorize(np.array([[1, 2]], np.uint8)), [[[128, 0, 0], [0, 128, 0]]])


def test_cams_to_probs_hand_example():
    cams = np.array([0.6, 0.2], np.float32).reshape(2, 1, 1)
    probs = cams_to_probs(cams)
    # background = 1 - max = 0.4; scores (0.4, 0.6, 0.2) / 1.2
    assert probs.shape == (3, 1, 1)
    np.testing.assert_allclose(probs[:, 0, 0], [1 / 3, 1 / 2, 1 / 6], atol=1e-5)
    # bg_power 2: background (0.4)^2 = 0.16; sum 0.96
    np.testing.assert_allclose(cams_to_probs(cams, bg_power=2)[:, 0, 0],
                               np.array([0.16, 0.6, 0.2]) / 0.96, atol=1e-5)
    # a constant background score
    np.testing.assert_allclose(cams_to_probs(cams, bg_threshold=0.5)[:, 0, 0],
                               np.array([0.5, 0.6, 0.2]) / 1.3, atol=1e-5)


def test_cams_to_probs_sums_to_one_and_clips(rng):
    cams = rng.random((3, 5, 7)).astype(np.float32)
    probs = cams_to_probs(cams, bg_power=1.5)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-6)
    # ratios between classes are the CAM ratios
    np.testing.assert_allclose(probs[1] / probs[2], (cams[0] + 1e-6) / (cams[1] + 1e-6), rtol=1e-4)
    np.testing.assert_allclose(probs[0] / probs[1], ((1 - cams.max(0)) ** 1.5 + 1e-6) / (cams[0] + 1e-6), rtol=1e-3)
    # values above 1 are clipped: max 1 -> background 0
    hot = cams_to_probs(np.full((1, 2, 2), 1.5, np.float32))
    assert np.all(hot[0] < 1e-5) and np.allclose(hot[1], 1, atol=1e-5)


def test_cams_to_probs_no_classes_is_all_background():
    probs = cams_to_probs(np.zeros((0, 3, 4), np.float32))
    assert probs.shape == (1, 3, 4) and np.all(probs == 1)


def test_probs_to_mask_hand_example():
    # three pixels: background wins, row 1 wins (0.6), row 2 wins (0.96)
    probs = np.array([[0.8, 0.3, 0.02],
                      [0.1, 0.6, 0.02],
                      [0.1, 0.1, 0.96]], np.float32).reshape(3, 1, 3)
    mask, conf = probs_to_mask(probs, class_ids=[4, 1])
    assert mask.dtype == np.uint8 and conf.dtype == np.uint8
    assert mask.tolist() == [[0, 5, 2]]  # rows -> class_ids + 1
    assert conf.tolist() == [[204, 153, 245]]  # round(0.8*255), round(0.6*255), round(0.96*255)
    assert ignore_below(mask, conf, 0.95).tolist() == [[255, 255, 2]]  # 204, 153 < 0.95 * 255 <= 245
    assert ignore_below(mask, conf, 0.0).tolist() == mask.tolist()
    with pytest.raises(ValueError, match="min_confidence"):
        ignore_below(mask, conf, 95)


def test_overlay_leaves_background_and_ignore_unchanged(rng):
    image = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    image[1, 1] = 100
    mask = np.zeros((4, 5), np.uint8)
    mask[1, 1] = 1
    mask[2, 2] = 255
    out = overlay(image, mask, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == image.shape
    keep = mask != 1
    assert np.array_equal(out[keep], image[keep])
    assert out[1, 1].tolist() == [114, 50, 50]  # 0.5*100 + 0.5*(128, 0, 0)


def test_overlay_grid_stacks_image_over_overlay_and_pads_short_columns():
    tall = np.full((4, 2, 3), 10, np.uint8)
    short = np.full((2, 3, 3), 20, np.uint8)
    short_mask = np.ones((2, 3), np.uint8)
    grid = overlay_grid([(tall, np.zeros((4, 2), np.uint8)), (short, short_mask)])
    assert grid.shape == (8, 5, 3) and grid.dtype == np.uint8
    assert np.array_equal(grid[:, :2], np.full((8, 2, 3), 10))  # background: the overlay is the image
    assert np.array_equal(grid[:2, 2:], short)
    assert np.array_equal(grid[2:4, 2:], overlay(short, short_mask))
    assert not grid[4:, 2:].any()  # the shorter column is padded with black
