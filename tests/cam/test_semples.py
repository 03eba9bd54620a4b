"""SemPLeS on CLIP: the loss on hand-built features, prompt injection at the end-of-text
position, the background masking, the prompts file and the method's extra softmax rows."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss_ray.cam.semples import (LearnedPrompts, SemPLeS, encode_prompted, load_prompts, masked_background,
                                  nearest_tokens, prompt_loss, prompt_slots)
from wsss_ray.clip import get_tokenizer
from wsss_ray.config import LabelJobConfig, SemplesConfig, resolve_label_job
from wsss_ray.store import atomic_write
from wsss_ray.labelset import load_labelset
from wsss_ray.toyworld import render


def test_prompt_loss_terms_on_hand_built_features():
    e1, e2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    background = torch.stack([e1, e1])
    prompts = torch.stack([e1 + e2, e1])                 # cos 1/sqrt2 with the first background, 1 (clamped) with the second
    class_text = torch.stack([e2, -e1])                  # cos 1/sqrt2, then -1 (clamped to 1e-4)
    loss, pull, push = prompt_loss(background, prompts, class_text, text_weight=0.5)
    want_pull = -(math.log(1 / math.sqrt(2)) + math.log(0.9999)) / 2
    want_push = (math.log(1 / math.sqrt(2)) + math.log(1e-4)) / 2
    assert pull.item() == pytest.approx(want_pull, rel=1e-5)
    assert push.item() == pytest.approx(want_push, rel=1e-5)
    assert loss.item() == pytest.approx(want_pull + 0.5 * want_push, rel=1e-5)


def test_prompt_loss_pulls_toward_the_background_and_away_from_the_class_text():
    background, class_text = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.6, 0.8]])
    p = torch.tensor([[0.8, 0.6]], requires_grad=True)
    prompt_loss(background, p, class_text, 0.02)[0].backward()
    step = -p.grad[0]                                  # gradient descent direction
    tangent = torch.tensor([0.6, -0.8])                # turns p toward background, away from the text
    assert float(step @ tangent) > 0


def test_slots_sit_between_the_prefix_and_the_full_stop_with_eot_after():
    tok = get_tokenizer()
    slots = prompt_slots(tok, 5)
    plain = tok(["a photo of ."])[0]
    assert slots.start == 4 and slots.eot == 4 + 5 + 1      # <sot> a photo of | 5 slots | . | <eot>
    assert torch.equal(slots.ids[:4], plain[:4])
    assert slots.ids[slots.eot] == plain[5] == plain.max()  # the end-of-text token, highest id
    assert slots.ids[slots.eot - 1] == plain[4]             # the full stop
    with pytest.raises(ValueError, match="does not fit .* context of 24; use --length 18"):
        prompt_slots(tok, 19)


def test_injected_word_embeddings_give_the_sentence_feature(tiny_model):
    """Slots holding the token embeddings of real words encode exactly that sentence."""
    tok = get_tokenizer()
    words = tok(["a photo of red cow."])[0]
    slots = prompt_slots(tok, 2)
    with torch.no_grad():
        emb = tiny_model.token_embedding(words[4:6])[None]          # "red", "cow"
        got = encode_prompted(tiny_model, slots, emb)
        want = tiny_model.encode_text(words[None])
    assert torch.allclose(got, want, atol=1e-5)
    # the feature is read at the end-of-text position: changing a slot changes it
    with torch.no_grad():
        other = encode_prompted(tiny_model, slots, emb.flip(1))
    assert not torch.allclose(other, want, atol=1e-3)


def test_gradients_reach_only_the_prompt(tiny_model):
    slots = prompt_slots(get_tokenizer(), 3)
    p = torch.rand(2, 3, tiny_model.token_embedding.weight.shape[1], requires_grad=True)
    encode_prompted(tiny_model, slots, p).sum().backward()
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_masked_background_removes_the_cam_region():
    x = torch.ones(3, 2, 2)
    cams = torch.tensor([[[0.0, 1.0], [0.0, 0.5]], [[0.2, 0.2], [0.2, 0.2]]])
    out = masked_background(x, cams[:1], eps=0.0)
    assert torch.allclose(out[0, 0], torch.tensor([[1.0, 0.0], [1.0, 0.5]]))
    assert torch.allclose(masked_background(x, cams[1:], eps=0.1)[0], x)  # a flat CAM masks nothing
    soft = masked_background(x, cams[:1], eps=0.1)        # SemPLeS's +0.1: the peak keeps 1/11
    assert soft[0, 0, 0, 1].item() == pytest.approx(1 - 1 / 1.1)


def test_prompts_round_trip_and_mismatches_are_clear(tmp_path):
    labelset = load_labelset("toyworld")
    emb = torch.randn(len(labelset), 4, 16)
    prompts = LearnedPrompts(emb, labelset.names, "toyclip")
    atomic_write(str(tmp_path / "prompts.safetensors"), prompts.to_bytes())
    back = load_prompts(str(tmp_path), labelset, 16)        # the folder finds its prompts.safetensors
    assert torch.equal(back.embeddings, emb) and back.classes == labelset.names and back.model == "toyclip"
    with pytest.raises(ValueError, match="width 16 .* token width is 128"):
        load_prompts(str(tmp_path / "prompts.safetensors"), labelset, 128)
    with pytest.raises(ValueError, match="learned for classes"):
        load_prompts(str(tmp_path), load_labelset("voc"), 16)
    with pytest.raises(ValueError, match="run jobs/learn_prompts.py"):
        load_prompts(str(tmp_path / "nothing"))


def test_nearest_tokens_finds_injected_words(tiny_model):
    tok = get_tokenizer()
    ids = tok(["cow sheep"])[0][1:3]
    emb = tiny_model.token_embedding.weight[ids].detach()[None]
    assert nearest_tokens(tiny_model, tok, emb) == [["cow", "sheep"]]


def test_semples_needs_its_prompts_before_anything_starts():
    with pytest.raises(ValueError, match="needs its learned prompts: pass --prompts"):
        LabelJobConfig(method="semples")
    with pytest.raises(ValueError, match="needs its learned prompts"):
        resolve_label_job({"method": "semples"})


@pytest.fixture
def prompts_dir(tiny_clip, tmp_path):
    labelset = load_labelset("toyworld")
    torch.manual_seed(0)
    emb = torch.rand(len(labelset), 4, tiny_clip.model.token_embedding.weight.shape[1])
    atomic_write(str(tmp_path / "prompts.safetensors"), LearnedPrompts(emb, labelset.names, "tiny").to_bytes())
    return tmp_path


def test_each_present_class_gets_its_own_background_competitor(tiny_clip, prompts_dir):
    labelset = load_labelset("toyworld")
    method = SemPLeS(SemplesConfig(prompts=str(prompts_dir), caa=False), tiny_clip, labelset)
    rows, targets = method.softmax_rows([4, 1])
    plain, plain_targets = method.text.for_image([4, 1], "present")
    assert targets == plain_targets == [0, 1]
    assert torch.equal(rows[:len(plain)], plain)
    assert torch.equal(rows[len(plain):], method.background_prompts[[4, 1]])
    # the extra competitors change the CAMs but not their shape
    img = render(3)
    ids = [labelset.index(l) for l in img.labels]
    cams = method.cams([img.image], [ids])[0]
    from wsss_ray.cam.clip_es import ClipES
    from wsss_ray.config import ClipESConfig

    base = ClipES(ClipESConfig(caa=False), tiny_clip, labelset).cams([img.image], [ids])[0]
    assert cams.shape == base.shape and 0 <= cams.min() and cams.max() <= 1
    assert not np.allclose(cams, base, atol=1e-3)


def test_prompts_for_another_width_are_refused_when_the_method_is_built(tiny_clip, tmp_path):
    labelset = load_labelset("toyworld")
    atomic_write(str(tmp_path / "p.safetensors"),
                 LearnedPrompts(torch.zeros(len(labelset), 4, 512), labelset.names, "ViT-B-16").to_bytes())
    with pytest.raises(ValueError, match="width 512"):
        SemPLeS(SemplesConfig(prompts=str(tmp_path / "p.safetensors")), tiny_clip, labelset)


def test_cosine_is_what_the_loss_clamps():
    a, b = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(5, 8), dim=-1)
    from wsss_ray.cam.semples import clamped_similarity

    assert torch.allclose(clamped_similarity(a, b), (a * b).sum(-1).clamp(1e-4, 0.9999), atol=1e-6)
