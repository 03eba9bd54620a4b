"""The tagger: its steps on hand-built features with known answers, and on toyclip."""

import dataclasses
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss_ray.cam.gradcam import to_model_input
from wsss_ray.config import TaggerConfig, resolve_label_job
from wsss_ray.labeler import Labeler
from wsss_ray.metrics import mean_average_precision, tag_counts, tag_scores
from wsss_ray.tagger import class_box, refine_patches, select
from wsss_ray.toyworld.world import split_samples
from wsss_ray.vit import image_embedding, vit_tokens

NAMES = ["boat", "plane", "car", "cow"]


def test_select_keeps_the_classes_at_or_above_the_threshold_best_first_up_to_top_k():
    scores = np.array([0.2, 0.6, 0.05, 0.2], np.float32)
    assert select(scores, NAMES, 0.2, None).labels == ["plane", "boat", "cow"]  # ties keep labelset order
    tags = select(scores, NAMES, 0.2, 2)
    assert tags.labels == ["plane", "boat"] and tags.scores == pytest.approx([0.6, 0.2])
    assert tags.class_scores.dtype == np.float32 and tags.class_scores.tolist() == pytest.approx(scores.tolist())
    assert select(scores, NAMES, 0.7, None).labels == [] and select(scores, NAMES, 0.7, None).scores == []


def test_refinement_takes_the_classes_of_the_patches_a_patch_attends_to_most():
    # Three patches: 0 is class A, 1 is class B, 2 is unsure. Patch 2 attends mostly to patch 0,
    # a little to 1 (below its row's mean: dropped by TagCLIP's mask), so it becomes class A.
    probs = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]])
    attention = torch.tensor([[[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]]])
    refined = refine_patches(probs, attention)
    assert np.allclose(refined[0], [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    uniform = torch.full((1, 3, 3), 1 / 3)  # every entry equals its row's mean: kept, so each patch takes the mean
    assert np.allclose(refine_patches(probs, uniform)[0], [[0.5, 0.5]] * 3)


def test_a_class_box_is_the_bounding_box_of_the_patches_near_its_best():
    scores = torch.zeros(4, 4)
    scores[1, 1], scores[2, 3], scores[0, 0] = 1.0, 0.6, 0.4
    box = class_box(scores.flatten(), (4, 4), 0.5).view(4, 4)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1:3, 1:4] = True  # rows 1-2, columns 1-3: (0, 0) is below half of the best
    assert torch.equal(box, expected)
    assert class_box(scores.flatten(), (4, 4), 0.3).view(4, 4).sum() == 12  # (0, 0) joins: rows 0-2, columns 0-3


def test_tag_scores_count_micro_precision_recall_f1_and_exact_sets():
    counts = tag_counts([["cow"], ["cow", "boat"], ["car"]], [["cow"], ["cow"], ["boat"]])
    assert counts.tolist() == [3, 4, 3, 2, 1]
    assert tag_scores(counts) == {"tags_scored": 3, "tag_precision": 0.6667, "tag_recall": 0.5,
                                  "tag_f1": 0.5714, "tag_exact": 0.3333}
    truth = np.array([[1, 0], [0, 1], [1, 1]], bool)
    assert mean_average_precision(truth, np.array([[0.9, 0.1], [0.2, 0.8], [0.8, 0.3]])) == pytest.approx(1.0)
    # Class 0: the negative ranks first, then both positives: AP (1/2 + 2/3) / 2; class 1: AP 1.
    assert mean_average_precision(truth, np.array([[0.1, 0.1], [0.9, 0.8], [0.8, 0.3]])) == pytest.approx(
        ((1 / 2 + 2 / 3) / 2 + 1.0) / 2)


@pytest.fixture(scope="module")
def labeler():
    return Labeler.from_spec("toyclip", "toyworld")


def with_tagger(labeler: Labeler, **settings) -> Labeler:
    return Labeler(labeler.method, labeler.post, labeler.precision, TaggerConfig(**settings))


def test_the_global_baseline_is_the_models_own_zero_shot_softmax(labeler):
    tagger = with_tagger(labeler, kind="global", flip=False).tagger
    images = [s.image for s in split_samples("val", 4)]
    clip = labeler.method.clip
    x = torch.stack([to_model_input(i, (64, 64), clip.mean, clip.std) for i in images])
    with torch.no_grad():
        emb = F.normalize(clip.model.encode_image(x), dim=-1)
        rows = torch.cat([tagger.text.classes, tagger.text.background])
        expected = torch.softmax(clip.model.logit_scale.exp() * emb @ rows.T, -1)[:, :8]
    assert np.allclose(tagger.scores(images), expected.numpy(), atol=1e-5)


def test_with_flip_a_mirrored_image_scores_as_the_image_itself(labeler):
    image = split_samples("val", 1)[0].image
    for kind in ("global", "tagclip"):
        tagger = with_tagger(labeler, kind=kind, flip=True, global_weight=1.0).tagger
        a, b = tagger.scores([image, image[:, ::-1]])
        assert np.allclose(a, b, atol=1e-5)


def test_a_token_crop_keeping_every_patch_is_the_whole_image_and_a_smaller_one_sees_less(labeler):
    model = labeler.method.clip.model
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        whole = image_embedding(model, vit_tokens(model, x)[0])
        kept = image_embedding(model, vit_tokens(model, x, keep=torch.ones(2, 64, dtype=torch.bool))[0])
        assert torch.allclose(whole, kept, atol=1e-5)
        half = torch.zeros(2, 64, dtype=torch.bool)
        half[:, :32] = True
        tokens = vit_tokens(model, x, keep=half)[0]
        assert tokens.shape[:2] == (2, 33)  # the class token and the 32 patches kept
        # The crop sees only the top half: changing the bottom half changes nothing.
        y = x.clone()
        y[:, :, 32:] = torch.randn_like(y[:, :, 32:])
        assert torch.allclose(tokens, vit_tokens(model, y, keep=half)[0], atol=1e-5)


def test_the_shipped_tagger_names_most_toy_images_labels(labeler):
    """toyclip's own tagger settings (its label_config.yaml) on 64 val images: a real classifier."""
    assert resolve_label_job({}).tagger == labeler.tagger_config
    samples = split_samples("val", 64)
    tags = labeler.tags([s.image for s in samples])
    scores = tag_scores(tag_counts([s.labels for s in samples], [t.labels for t in tags]))
    assert scores["tag_f1"] > 0.75 and scores["tag_exact"] > 0.5
    assert all(t.scores == sorted(t.scores, reverse=True) for t in tags)


def test_the_labeler_labels_images_without_labels_with_the_tagger_s(labeler):
    samples = split_samples("val", 6)
    images = [s.image for s in samples]
    tags = labeler.tags(images)
    unchecked = with_tagger(labeler, **{**dataclasses.asdict(labeler.tagger_config), "min_label_quality": 0.0})
    results = unchecked.label(images, [None, ["cow"], None, None, None, None])
    assert results[0].labels == tags[0].labels and results[0].label_scores == pytest.approx(tags[0].scores)
    assert results[1].labels == ["cow"] and results[1].label_scores is None
    assert results[0].cams.shape[0] == len(tags[0].labels)
    assert [r.labels for r in unchecked.label(images)] == [t.labels for t in tags]
    # toyclip's own settings check the proposed labels against their masks: some are dropped, none added
    checked = labeler.label(images)
    assert labeler.tagger_config.min_label_quality > 0
    for r, t in zip(checked, tags):
        assert r.labels == [l for l in t.labels if l in r.labels] and len(r.label_scores) == len(r.labels)
        assert r.cams.shape[0] == len(r.labels) and all(q >= 0.3 for q in r.label_quality)
    assert sum(map(len, (r.labels for r in checked))) < sum(map(len, (t.labels for t in tags)))


def test_verification_drops_a_proposed_label_that_does_not_hold_up_in_its_mask_and_remakes_the_mask():
    from wsss_ray.config import PostConfig
    from wsss_ray.crf import crf_within_budget, score
    from wsss_ray.labeler import to_probs, verify_labels

    yy, xx = np.mgrid[:48, :48]
    disc = ((yy - 24) ** 2 + (xx - 24) ** 2 < 150).astype(np.float32)
    image = np.where(disc[..., None] > 0, 200, 40).astype(np.uint8).repeat(3, -1)
    cams = np.stack([disc, np.full_like(disc, 0.02)])  # a real object, and a label with nothing behind it
    post = PostConfig()
    probs = to_probs(cams, post)
    _, label_quality = score(probs, crf_within_budget(image, probs, post.crf)[0], post.quality)
    assert label_quality[1] < label_quality[0]
    between = (label_quality[0] + label_quality[1]) / 2
    assert verify_labels(image, cams, post, 0.0).kept == [0, 1]  # off: nothing dropped
    v = verify_labels(image, cams, post, between)
    assert v.kept == [0]
    alone = to_probs(cams[[0]], post)
    marginals = crf_within_budget(image, alone, post.crf)[0]
    assert np.allclose(v.marginals, marginals) and v.scores == score(alone, marginals, post.quality)
    assert verify_labels(image, cams, post, 1.0).kept == []  # nothing holds up: an all-background mask
