import math

import pytest
import torch
import torch.nn.functional as F

from wsss_ray.cam.prompts import (
    CANDIDATE_TEMPLATES,
    TextFeatures,
    class_texts,
    encode_texts,
    rank_templates,
    sharpness,
    text_features,
)
from wsss_ray.labelset import ClassSpec, Labelset

PETS = Labelset(
    "pets",
    (ClassSpec("cat", ("cat", "kitty")), ClassSpec("dog"), ClassSpec("bird", ("bird", "avian"))),
    templates=("a photo of a {}.",),
    background=("grass", "sky"),
)


def test_class_texts():
    assert class_texts(PETS, "concat") == [["cat, kitty"], ["dog"], ["bird, avian"]]
    assert class_texts(PETS, "mean") == [["cat", "kitty"], ["dog"], ["bird", "avian"]]
    assert class_texts(PETS, "name") == [["cat"], ["dog"], ["bird"]]
    with pytest.raises(ValueError, match="synonym_fusion"):
        class_texts(PETS, "sum")


def test_text_features_shapes_and_norm(tiny_clip):
    tf = text_features(tiny_clip.model, tiny_clip.tokenizer, PETS)
    assert tf.classes.shape == (3, 128)
    assert tf.background.shape == (2, 128)
    torch.testing.assert_close(tf.classes.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(tf.background.norm(dim=-1), torch.ones(2))
    assert tf.templates == PETS.templates and tf.synonym_fusion == "concat"
    none = text_features(tiny_clip.model, tiny_clip.tokenizer, PETS, background=False)
    assert none.background.shape == (0, 128)
    torch.testing.assert_close(none.classes, tf.classes)


def test_encode_texts_averages_normalised_embeddings(tiny_clip):
    model, tok = tiny_clip.model, tiny_clip.tokenizer
    templates = ("a photo of a {}.", "a drawing of a {}.")
    fused = encode_texts(model, tok, [["cat", "kitty"]], templates)
    with torch.no_grad():
        each = F.normalize(model.encode_text(tok([t.format(w) for w in ("cat", "kitty") for t in templates])), dim=-1)
    torch.testing.assert_close(fused[0], F.normalize(each.mean(0), dim=0), atol=1e-5, rtol=1e-5)
    # the mean fusion of a labelset is the same thing class by class
    tf = text_features(model, tok, PETS, templates, synonym_fusion="mean")
    torch.testing.assert_close(tf.classes[0], fused[0], atol=1e-5, rtol=1e-5)


def test_for_image_rows_and_targets():
    classes = torch.eye(5)[:3]
    background = torch.eye(5)[3:]
    tf = TextFeatures(classes, background, ("{}",), "concat")
    rows, targets = tf.for_image([2, 0], "present")
    assert rows.shape == (4, 5)
    assert targets == [0, 1]
    assert torch.equal(rows[0], classes[2]) and torch.equal(rows[1], classes[0])
    assert torch.equal(rows[2:], background)
    rows, targets = tf.for_image([2, 0], "all")
    assert torch.equal(rows, torch.eye(5))
    assert targets == [2, 0]
    with pytest.raises(ValueError, match="softmax_over"):
        tf.for_image([0], "some")


def test_sharpness_hand_example():
    truth = torch.tensor([[False, True, False, False]] * 2)
    probs = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    s = sharpness(probs, truth)
    # one-hot on the right class: mass 1, entropy 0 (clamped at 1e-6); uniform: 0.25 / ln 4
    assert s[0] == pytest.approx(1 / 1e-6)
    assert s[1] == pytest.approx(0.25 / math.log(4))
    assert s[0] > s[1]
    # sharp but wrong scores below uniform-with-some-mass
    wrong = sharpness(torch.tensor([[0.9, 0.05, 0.05, 0.0]]), truth[:1])
    right = sharpness(torch.tensor([[0.05, 0.9, 0.05, 0.0]]), truth[:1])
    assert right > wrong


def test_rank_templates_sorted_best_first(tiny_clip):
    model, tok = tiny_clip.model, tiny_clip.tokenizer
    with torch.no_grad():
        images = F.normalize(model.encode_image(torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))), dim=-1)
    candidates = list(CANDIDATE_TEMPLATES[:3])
    ranking = rank_templates(model, tok, images, [[0], [1, 2], [2]], PETS, candidates)
    assert sorted(t for t, _ in ranking) == sorted(candidates)
    values = [v for _, v in ranking]
    assert values == sorted(values, reverse=True)
    # each value is the mean sharpness computed by hand for that template
    template, best = ranking[0]
    tf = text_features(model, tok, PETS, (template,))
    with torch.no_grad():
        probs = (model.logit_scale.exp() * images @ torch.cat([tf.classes, tf.background]).T).softmax(-1)
    truth = torch.zeros(3, 5, dtype=torch.bool)
    truth[0, 0] = truth[1, 1] = truth[1, 2] = truth[2, 2] = True
    assert best == pytest.approx(float(sharpness(probs, truth).mean()), rel=1e-5)
