"""The size budget: the model and the CRF see bounded images, masks come back at full size."""

import io

import numpy as np
import pytest
from PIL import Image

import wsss_ray.crf as crf
from wsss_ray.budget import budget_side, fit_side, shrink
from wsss_ray.cam import ClipES
from wsss_ray.config import ClipESConfig, CrfConfig, LabelJobConfig, PostConfig
from wsss_ray.crf import crf_within_budget, dense_crf, upsample_labels
from wsss_ray.labeler import Labeler, refine
from wsss_ray.labelset import load_labelset
from wsss_ray.masks import probs_to_mask
from wsss_ray.progress import first_batches
from wsss_ray.store import decode_image, decode_within
from wsss_ray.stages import decode_stage, failure, full_pixels
from wsss_ray.toyworld import render


@pytest.mark.parametrize("size, side, fitted", [
    ((375, 500), 640, (375, 500)),     # a VOC image: unchanged
    ((640, 480), 640, (640, 480)),     # the largest COCO size: unchanged
    ((3000, 4000), 640, (480, 640)),
    ((6000, 8000), 64, (48, 64)),
    ((4000, 3000), 64, (64, 48)),
    ((10, 5000), 640, (1, 640)),       # the short side never reaches 0
    ((6000, 8000), None, (6000, 8000)),
])
def test_fit_side_shrinks_the_long_side_to_the_budget(size, side, fitted):
    assert fit_side(*size, side) == fitted


def test_the_decode_shrinks_to_the_largest_budget_of_the_steps_after_it():
    assert budget_side(64, 640) == 640 and budget_side(1024, 640) == 1024
    assert budget_side(None, 640) is None  # a step without a budget needs the whole image


def _jpeg(height: int, width: int, orientation: int | None = None) -> bytes:
    yy, xx = np.mgrid[:height, :width]
    image = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 90)], -1).astype(np.uint8)
    out = io.BytesIO()
    img = Image.fromarray(image)
    exif = img.getexif()
    if orientation:
        exif[0x0112] = orientation
    img.save(out, "JPEG", quality=92, exif=exif)
    return out.getvalue()


def test_a_large_jpeg_decodes_shrunk_with_its_full_size():
    data = _jpeg(3000, 4000)
    pixels, full = decode_within(data, max_side=640)
    assert pixels.shape == (480, 640, 3) and full == (3000, 4000)
    whole = decode_image(data)
    assert whole.shape == (3000, 4000, 3)
    # the shrunk image is the whole one, smaller: a smooth gradient stays within a few levels
    assert np.abs(pixels.astype(int) - shrink(whole, (480, 640)).astype(int)).mean() < 2


def test_a_turned_photo_shrinks_upright():
    pixels, full = decode_within(_jpeg(300, 400, orientation=6), max_side=100)  # 6: rotated 90 degrees
    assert full == (400, 300) and pixels.shape == (100, 75, 3)
    assert decode_within(_jpeg(300, 400, orientation=6))[0].shape == (400, 300, 3)


def test_the_decode_stage_keeps_the_whole_images_size_and_refetches_it_for_the_mask(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(_jpeg(1200, 1600))
    small = tmp_path / "small.jpg"
    small.write_bytes(_jpeg(300, 400))
    batch = decode_stage({"id": ["a", "b"], "image": [str(path), str(small)], "labels": [["cow"], ["cow"]],
                          "status": ["ok", "ok"], "error": [None, None]}, 50_000_000, max_side=640)
    assert batch["pixels"][0].shape == (480, 640, 3) and (batch["height"][0], batch["width"][0]) == (1200, 1600)
    assert batch["pixels"][1].shape == (300, 400, 3) and (batch["height"][1], batch["width"][1]) == (300, 400)
    assert full_pixels(batch, 0, 50_000_000).shape == (1200, 1600, 3)
    assert full_pixels(batch, 1, 50_000_000) is batch["pixels"][1]  # kept whole: not read again


# ------------------------------------------------------------------ full-size labels from the CRF's size


def test_where_the_cells_agree_pixels_take_their_label_and_the_interpolated_confidence():
    marginals = np.stack([np.full((6, 8), 0.1), np.full((6, 8), 0.2), np.full((6, 8), 0.7)]).astype(np.float32)
    marginals[2, :, 4:] = 0.6   # a step in confidence, not in the label
    marginals[1, :, 4:] = 0.3
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    labels, confidence = upsample_labels(marginals, shrink(image, (6, 8)), image, 6.0, np.array([0, 5, 9], np.uint8))
    assert (labels == 9).all()
    assert (confidence[:, :30] == 178).all() and (confidence[:, 50:] == 153).all()  # round(255 * 0.7), (255 * 0.6)
    assert (np.diff(confidence[0].astype(int)) <= 0).all()                          # bilinear between the two


def _edge_scene(height: int, width: int, edge: int) -> tuple[np.ndarray, np.ndarray]:
    """A red left part (columns < edge) and a blue right part, with its true labels (1 left, 2 right)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :edge] = (220, 30, 30)
    image[:, edge:] = (30, 40, 210)
    truth = np.where(np.arange(width) < edge, 1, 2)[None].repeat(height, 0).astype(np.uint8)
    return image, truth


def test_labels_come_back_to_full_size_along_the_full_images_colour_edge():
    image, truth = _edge_scene(600, 800, edge=413)  # the edge falls inside a cell of the 8x-smaller grid
    low = shrink(image, (75, 100))
    _, low_truth = _edge_scene(75, 100, edge=413 // 8)
    marginals = np.stack([np.full((75, 100), 0.02), np.where(low_truth == 1, 0.9, 0.08),
                          np.where(low_truth == 2, 0.9, 0.08)]).astype(np.float32)
    marginals /= marginals.sum(0, keepdims=True)
    labels, confidence = upsample_labels(marginals, low, image, 6.0)
    assert np.array_equal(labels, truth)               # every pixel, the edge's included
    nearest = np.asarray(Image.fromarray(low_truth).resize((800, 600), Image.Resampling.NEAREST))
    assert not np.array_equal(nearest, truth)          # which nearest-neighbour upsampling misses
    assert confidence.shape == (600, 800) and confidence.min() >= 200


def test_upsampling_in_small_groups_gives_the_same_labels(monkeypatch):
    rng = np.random.default_rng(3)
    image, _ = _edge_scene(120, 160, edge=71)
    image = np.clip(image + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
    low = shrink(image, (24, 32))
    marginals = rng.dirichlet(np.ones(3), (24, 32)).transpose(2, 0, 1).astype(np.float32)
    whole = upsample_labels(marginals, low, image, 6.0)
    monkeypatch.setattr(crf, "BAND_PIXELS", 100)
    grouped = upsample_labels(marginals, low, image, 6.0)
    assert np.array_equal(whole[0], grouped[0]) and np.array_equal(whole[1], grouped[1])


def test_refine_within_the_budget_is_the_crf_at_full_size():
    image, _ = _edge_scene(48, 64, edge=30)
    probs = np.stack([np.full((48, 64), 0.2), np.full((48, 64), 0.5), np.full((48, 64), 0.3)]).astype(np.float32)
    post = PostConfig()
    assert np.array_equal(np.stack(refine(image, probs, [2, 5], post)),
                          np.stack(probs_to_mask(dense_crf(image, probs, post.crf), [2, 5])))


def test_refine_of_a_photo_over_the_budget_gives_a_full_size_mask_that_follows_its_edges():
    image, truth = _edge_scene(900, 1200, edge=517)   # the edge falls inside a cell of the CRF's 200x150
    probs = np.stack([np.full((900, 1200), 0.05), np.where(truth == 1, 0.85, 0.1),
                      np.where(truth == 2, 0.85, 0.1)]).astype(np.float32)
    probs /= probs.sum(0, keepdims=True)
    post = PostConfig(crf=CrfConfig(max_side=200))
    mask, confidence = refine(image, probs, [0, 1], post)
    assert mask.shape == confidence.shape == (900, 1200)
    assert np.array_equal(mask, truth)
    marginals, small = crf_within_budget(image, probs, post.crf)
    assert marginals.shape == (3, 150, 200) and small.shape == (150, 200, 3)
    nearest = np.asarray(Image.fromarray(marginals.argmax(0).astype(np.uint8)).resize((1200, 900), Image.NEAREST))
    assert not np.array_equal(nearest, truth)        # the CRF's own labels, only enlarged, miss the edge


# ------------------------------------------------------------------ the model-input budget


def test_the_model_sees_a_large_image_shrunk_to_its_budget_times_each_scale(tiny_clip):
    method = ClipES(ClipESConfig(scales=(1.0, 2.0), caa=False, max_side=64), tiny_clip, load_labelset("toyworld"))
    seen = []
    grid = method._grid_cams

    def spy(x, ids):
        seen.append(tuple(x.shape[-2:]))
        return grid(x, ids)

    method._grid_cams = spy
    image = np.ascontiguousarray(np.tile(render(2_000_001, 64).image, (8, 10, 1)))   # 512x640
    cams = method.cams([image], [[0, 3]])[0]
    assert seen == [(56, 64), (104, 128)]          # 51x64 after the budget, patch-aligned (8 px), then x2
    assert cams.shape == (2, 512, 640)             # back at the image's own size


def test_images_within_the_budget_are_labelled_as_without_it(tiny_clip):
    images = [render(2_000_001, 64).image, np.ascontiguousarray(render(2_000_002, 80).image[:48])]
    labelset = load_labelset("toyworld")
    with_budget = ClipES(ClipESConfig(scales=(1.0, 2.0), caa=False, max_side=80), tiny_clip, labelset)
    without = ClipES(ClipESConfig(scales=(1.0, 2.0), caa=False, max_side=None), tiny_clip, labelset)
    for a, b in zip(with_budget.cams(images, [[0], [1, 2]]), without.cams(images, [[0], [1, 2]])):
        assert np.array_equal(a, b)


def test_budget_settings_are_checked():
    with pytest.raises(ValueError, match="clip_es.max_side must be a whole number"):
        ClipESConfig(max_side=0)
    with pytest.raises(ValueError, match="post.crf.max_side must be a whole number"):
        CrfConfig(max_side=12.5)
    assert LabelJobConfig().method_config.max_side == 640 and CrfConfig().max_side == 640


# ------------------------------------------------------------------ a failure costs one row


def _stage_batch(images: list[np.ndarray], labels: list[list[str]]) -> dict:
    n = len(images)
    pixels = np.empty(n, dtype=object)
    pixels[:] = images
    return {"id": [f"i{k}" for k in range(n)], "image": [f"i{k}.png" for k in range(n)], "labels": labels,
            "status": ["ok"] * n, "error": [None] * n, "pixels": pixels,
            "height": np.array([i.shape[0] for i in images]), "width": np.array([i.shape[1] for i in images])}


def test_an_image_whose_labelling_raises_is_an_error_row_and_the_rest_of_its_batch_is_labelled():
    from wsss_ray.pipeline import CamStage

    stage = CamStage(LabelJobConfig(input="unused.jsonl"))
    cams = stage.labeler.method.cam_tensors

    def out_of_memory_on_odd_sizes(images, class_ids):
        if any(image.shape[0] == 41 for image in images):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 89466192008 bytes. Error code 12\nmore lines")
        return cams(images, class_ids)

    stage.labeler.method.cam_tensors = out_of_memory_on_odd_sizes
    images = [render(2_000_001, 64).image, np.zeros((41, 50, 3), np.uint8), render(2_000_002, 64).image]
    out = stage(_stage_batch(images, [["cow"], ["cow"], ["boat", "car"]]))
    assert list(out["status"]) == ["ok", "error", "ok"]
    assert out["error"][1] == ("labelling failed: RuntimeError: [enforce fail at alloc_cpu.cpp:117] data. "
                               "DefaultCPUAllocator: can't allocate memory: you tried to allocate 89466192008 "
                               "bytes. Error code 12")
    assert out["probs"][0].shape == (2, 64, 64) and out["probs"][2].shape == (3, 64, 64)
    alone = stage(_stage_batch([images[2]], [["boat", "car"]]))
    assert np.array_equal(out["probs"][2], alone["probs"][0])  # labelled as it would be without the bad image


def test_a_failure_is_one_short_sentence():
    assert failure("refinement", ValueError("bad\nworse")) == "refinement failed: ValueError: bad"
    assert failure("labelling", MemoryError()) == "labelling failed: MemoryError"
    assert len(failure("labelling", RuntimeError("x" * 1000))) == 300


def test_progress_says_what_a_job_does_before_its_first_row():
    assert first_batches({}) == "reading and decoding the first images, starting the actors (they load the model)"
    assert first_batches({"cam": 2, "crf": 1}) == ("working on the first batches (2 in the cam stage, "
                                                   "1 in the crf stage); none finished yet")


def test_the_labeller_labels_a_large_photo_at_its_full_size_as_it_labels_it_small():
    sample = render(2_000_500, 64)
    labels = [load_labelset("toyworld").names[i - 1] for i in np.unique(sample.mask) if 0 < i < 255]
    labeler = Labeler.from_spec()                       # toyclip's settings: max_side 64, the CRF's 640
    large = np.asarray(Image.fromarray(sample.image).resize((1600, 1200), Image.Resampling.BICUBIC))
    small, big = labeler.label([sample.image, large], [labels, labels])
    assert big.mask.shape == big.confidence.shape == (1200, 1600)
    assert big.cams.shape == (len(labels), 480, 640)    # worked on at the larger of the two budgets
    enlarged = np.asarray(Image.fromarray(small.mask).resize((1600, 1200), Image.Resampling.NEAREST))
    assert (enlarged == big.mask).mean() > 0.9
