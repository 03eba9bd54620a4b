import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from wsss_ray.cam.gradcam import (
    encode,
    explain,
    gradcam_loop,
    minmax,
    patch_aligned_size,
    softmax_gradcam,
    to_model_input,
)
from wsss_ray.vit import block_attention, pool_tokens, vit_tokens


def _unit_rows(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.fixture(scope="module")
def encoded(tiny_model):
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    return encode(tiny_model, images, attention_layers=2)


# three images with 1, 2 and 3 targets over 3, 5 and 4 text rows
TEXT_ROWS = (3, 5, 4)
TARGETS = [[0], [1, 4], [0, 2, 3]]


def test_patch_aligned_size():
    assert patch_aligned_size(500, 375, 16) == (512, 384)
    assert patch_aligned_size(512, 384, 16) == (512, 384)
    assert patch_aligned_size(500, 375, 16, scale=0.5) == (256, 192)  # ceil(250/16), ceil(187.5/16)
    assert patch_aligned_size(3, 5, 16) == (16, 16)


def test_to_model_input_normalises_and_resizes():
    image = np.full((10, 12, 3), 51, np.uint8)  # 0.2 after /255
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.5, 0.25)
    x = to_model_input(image, (16, 24), mean, std)
    assert x.shape == (3, 16, 24)
    expected = torch.tensor([(0.2 - m) / s for m, s in zip(mean, std)]).view(3, 1, 1).expand(3, 16, 24)
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=1e-5)


def test_minmax():
    cam = torch.tensor([[[1.0, 3.0], [5.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]])
    out = minmax(cam)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5], [1.0, 0.25]]), atol=1e-6, rtol=0)
    assert torch.equal(out[1], torch.zeros(2, 2))


def test_encode(tiny_model, encoded):
    assert encoded.grid == (8, 8)
    assert encoded.last_in.shape == (3, 65, 128)
    assert len(encoded.attention) == 2
    blocks = tiny_model.visual.transformer.resblocks
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        tokens, attn = vit_tokens(tiny_model, images, stop_at=3, capture=1)
        torch.testing.assert_close(encoded.last_in, tokens)
        torch.testing.assert_close(encoded.attention[0], attn[0])
        torch.testing.assert_close(encoded.attention[1], block_attention(blocks[-1], tokens))


@pytest.mark.parametrize("score", ["softmax", "logit"])
@pytest.mark.parametrize("max_pairs", [64, 2])
def test_batched_equals_loop(tiny_model, encoded, score, max_pairs):
    texts = [_unit_rows(n, 128, seed=i) for i, n in enumerate(TEXT_ROWS)]
    batched = softmax_gradcam(tiny_model, encoded, texts, TARGETS, score=score, max_pairs=max_pairs)
    loop = gradcam_loop(tiny_model, encoded, texts, TARGETS, score=score)
    assert [c.shape for c in batched] == [(len(t), 8, 8) for t in TARGETS]
    for b, l in zip(batched, loop):
        torch.testing.assert_close(b, l, atol=1e-5, rtol=0)
    for cams in batched:
        assert cams.min() >= 0 and cams.max() <= 1
        for cam in cams:
            if cam.max() > 0:  # non-degenerate maps are min-max normalised (range/(range + 1e-7))
                assert cam.max() == pytest.approx(1.0, abs=1e-3)
                assert cam.min() == pytest.approx(0.0, abs=1e-6)


def test_cams_depend_on_target(tiny_model, encoded):
    texts = [_unit_rows(4, 128, seed=11)] * 3
    a = softmax_gradcam(tiny_model, encoded, texts, [[0, 1]] * 3)
    assert not torch.allclose(a[0][0], a[0][1])


def test_no_targets(tiny_model, encoded):
    texts = [_unit_rows(3, 128, seed=0)] * 3
    out = softmax_gradcam(tiny_model, encoded, texts, [[], [0], []])
    assert [c.shape for c in out] == [(0, 8, 8), (1, 8, 8), (0, 8, 8)]
    loop = gradcam_loop(tiny_model, encoded, texts, [[], [0], []])
    assert [c.shape for c in loop] == [(0, 8, 8), (1, 8, 8), (0, 8, 8)]


def test_unknown_score_raises(tiny_model, encoded):
    texts = [_unit_rows(3, 128, seed=0)] * 3
    with pytest.raises(ValueError, match="score"):
        softmax_gradcam(tiny_model, encoded, texts, [[0], [0], [0]], score="nope")


# ------------------------------------------------------------------ known-answer localisation


def _transparent_vit(width=32):
    """One-block ViT whose Grad-CAM can be worked out by hand.

    - zero positional embedding: a patch's token depends only on its pixels, and an all-zero
      patch gives token 0 (conv1 has no bias; LayerNorm(0) = 0 with zero bias);
    - the block's attention is uniform (q = k = 0) with v and out_proj the identity, and the
      MLP outputs 0, so block(x)_i = x_i + m with m = mean_j ln_1(x)_j;
    - ln_post is the identity and proj is the identity.

    Then every token's ln_1 activation A_j gets the same gradient g = (1/L) dS/dm, and the CAM
    is relu(g · A_n): 0 on the zero patches and relu(g · a) on a patch with activation a.
    """
    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=width,
        vision_cfg=dict(image_size=32, patch_size=8, width=width, layers=1, head_width=16),
        text_cfg=dict(context_length=8, vocab_size=64, width=32, heads=2, layers=1),
    ).eval()
    v = model.visual
    blk = v.transformer.resblocks[0]
    with torch.no_grad():
        v.positional_embedding.zero_()
        d = width
        blk.attn.in_proj_weight.zero_()
        blk.attn.in_proj_weight[2 * d:] = torch.eye(d)
        blk.attn.in_proj_bias.zero_()
        blk.attn.out_proj.weight.copy_(torch.eye(d))
        blk.attn.out_proj.bias.zero_()
        blk.mlp.c_proj.weight.zero_()
        blk.mlp.c_proj.bias.zero_()
        v.proj.copy_(torch.eye(d))
    v.ln_post = torch.nn.Identity()
    return model


@pytest.mark.parametrize("score", ["logit", "softmax"])
@pytest.mark.parametrize("hw,patch", [((32, 32), (1, 2)), ((32, 48), (3, 0)), ((40, 24), (2, 1))])
def test_gradcam_localises_the_evidence(score, hw, patch):
    """An image that is zero except one patch; the text direction is that patch's feature
    (minus its component along the image embedding, so the score's gradient points at it).
    The CAM must be exactly 1 on that patch and 0 elsewhere; the opposite text gives no
    positive evidence anywhere."""
    model = _transparent_vit()
    blk = model.visual.transformer.resblocks[0]
    h, w = hw
    gh, gw = h // 8, w // 8
    r, c = patch
    image = torch.zeros(1, 3, h, w)
    image[0, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8] = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(5))
    enc = encode(model, image)
    assert enc.last_in.shape == (1, 1 + gh * gw, 32)
    with torch.no_grad():
        acts = blk.ln_1(enc.last_in)[0]
        special = 1 + r * gw + c
        plain = [i for i in range(1, 1 + gh * gw) if i != special]
        assert acts[plain].abs().max() == 0  # the construction: zero patches have zero activation
        a = acts[special]
        u = F.normalize(pool_tokens(model, blk(enc.last_in))[0], dim=0)
    t = F.normalize(a - (a @ u) * u, dim=0)

    texts = [torch.stack([t, -t])]  # softmax over the target and its opposite
    cam = softmax_gradcam(model, enc, texts, [[0]], score=score)[0][0]
    expected = torch.zeros(gh, gw)
    expected[r, c] = 1
    torch.testing.assert_close(cam, expected, atol=1e-5, rtol=0)

    anti = softmax_gradcam(model, enc, texts, [[1]], score=score)[0][0]
    assert torch.equal(anti, torch.zeros(gh, gw))


def test_one_forward_equals_per_class_loop_on_mixed_target_counts(tiny_model):
    """Images with 1..4 targets, chunked by target count under a small pair budget: each CAM is
    the per-class loop's (one last-block forward and backward per class) to 1e-5."""
    images = torch.randn(5, 3, 64, 80, generator=torch.Generator().manual_seed(3))
    enc = encode(tiny_model, images)
    texts = [_unit_rows(6, 128, seed=20 + i) for i in range(5)]
    targets = [[0, 1, 2, 3], [5], [], [2, 4], [1, 3, 5]]
    for max_pairs in (64, 3, 1):
        one = softmax_gradcam(tiny_model, enc, texts, targets, max_pairs=max_pairs)
        loop = gradcam_loop(tiny_model, enc, texts, targets)
        assert [c.shape for c in one] == [(len(t), 8, 10) for t in targets]
        for a, b in zip(one, loop):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_bf16_autocast_keeps_cams_float32_and_close(tiny_model, encoded):
    """Under bf16 autocast the model runs in bf16, the CAM arithmetic in float32."""
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    texts = [_unit_rows(4, 128, seed=30)] * 2
    full = softmax_gradcam(tiny_model, encode(tiny_model, images), texts, [[0, 1], [2]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = softmax_gradcam(tiny_model, encode(tiny_model, images), texts, [[0, 1], [2]])
    assert all(c.dtype == torch.float32 for c in half)
    for a, b in zip(full, half):
        assert (a - b).abs().mean() < 0.05


@pytest.mark.parametrize("source", ["attention", "keys"])
def test_explain_keeps_the_last_blocks_attention(tiny_model, encoded, source):
    """The last block's map comes from the gradient pass itself, equal to recomputing it."""
    texts = [_unit_rows(n, 128, seed=i) for i, n in enumerate(TEXT_ROWS)]
    out = explain(tiny_model, encoded, texts, [[0], [], [0, 2]], attention_source=source)
    last = block_attention(tiny_model.visual.transformer.resblocks[-1], encoded.last_in, source=source)
    assert out.attention[1] is None  # no targets, no pass
    for b in (0, 2):
        torch.testing.assert_close(out.attention[b], last[b], atol=1e-6, rtol=1e-5)
    assert explain(tiny_model, encoded, texts, [[0], [], [0, 2]]).attention == [None] * 3


@pytest.mark.parametrize("caa, atol", [(False, 1e-5), (True, 1e-4)])
def test_clip_es_equals_the_reference_order(tiny_clip, caa, atol):
    """CLIP-ES at two scales: one forward per image gives the per-class loop's CAMs. With CAA
    the last block's map comes from a different (equal) computation, and Sinkhorn
    normalisation, the squared affinity and min-max scaling amplify its rounding to ~2e-5."""
    from wsss_ray.cam.clip_es import ClipES, ClipESReferenceOrder
    from wsss_ray.config import ClipESConfig
    from wsss_ray.labelset import load_labelset

    config = ClipESConfig(scales=(1.0, 0.75), caa=caa, caa_layers=2)
    labelset = load_labelset("toyworld")
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (56, 72, 3), dtype=np.uint8) for _ in range(3)]
    ids = [[0, 3], [5], [1, 2, 4]]
    one = ClipES(config, tiny_clip, labelset).cams(images, ids)
    loop = ClipESReferenceOrder(config, tiny_clip, labelset).cams(images, ids)
    for a, b in zip(one, loop):
        np.testing.assert_allclose(a, b, atol=atol, rtol=0)
