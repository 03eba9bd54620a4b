"""FreeSeg on CLIP: known answers for the pooling, the ITSM scores and the value-value path."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss_ray.cam.freeseg import FreeSeg, itsm_scores, smoothed_min_pool
from wsss_ray.config import FreeSegConfig, resolve_label_job
from wsss_ray.labeler import Labeler
from wsss_ray.labelset import load_labelset
from wsss_ray.toyworld import render
from wsss_ray.vit import surgery_tokens, value_attention, vit_tokens


def test_smoothed_min_pool_known_answers():
    spike = torch.zeros(1, 5, 5)
    spike[0, 2, 2] = 1.0
    out = smoothed_min_pool(spike, 3, 0.1)
    # the spike's window: eight zeros and one 1 -> -0.1 * log((8 + e^-10) / 9)
    assert out[0, 2, 2].item() == pytest.approx(-0.1 * math.log((8 + math.exp(-10)) / 9), abs=1e-6)
    assert out[0, 0, 0].item() == pytest.approx(0.0, abs=1e-7)  # a window of zeros (border replicated)
    flat = torch.full((2, 4, 6), 0.7)
    assert torch.allclose(smoothed_min_pool(flat, 3, 0.1), flat, atol=1e-6)  # constants pass unchanged
    x = torch.rand(3, 7, 9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(smoothed_min_pool(x, 1, 0.1), x)
    hard = -F.max_pool2d(F.pad(-x[:, None], (2, 2, 2, 2), mode="replicate"), 5, stride=1)[:, 0]
    assert torch.allclose(smoothed_min_pool(x, 5, 1e-4), hard, atol=1e-3)  # t -> 0: the window minimum
    soft = smoothed_min_pool(x, 3, 0.1)
    padded = F.pad(x[:, None], (1, 1, 1, 1), mode="replicate")
    mean, low = F.avg_pool2d(padded, 3, stride=1)[:, 0], -F.max_pool2d(-padded, 3, stride=1)[:, 0]
    assert (soft <= mean + 1e-6).all() and (soft >= low - 1e-6).all()  # between its window's min and mean


def test_itsm_scores_on_hand_built_features():
    patches = torch.tensor([[2.0, 0.0], [0.0, 3.0]])             # unit directions e1, e2 (scaled)
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])    # class a, class b, a background word
    cos = np.array([[1, 0, 1 / math.sqrt(2)], [0, 1, 1 / math.sqrt(2)]])
    surgery = itsm_scores(patches, text, [0, 1], "surgery", 1.0).numpy()
    expected = (cos - cos.mean(1, keepdims=True))[:, [0, 1]].T
    np.testing.assert_allclose(surgery, expected, atol=1e-6)
    soft = itsm_scores(patches, text, [1], "softmax", 10.0).numpy()
    e = np.exp(10 * cos)
    np.testing.assert_allclose(soft, (e / e.sum(1, keepdims=True))[:, [1]].T, rtol=1e-5)
    assert soft[0, 1] > 0.5 > soft[0, 0]  # class b wins at the e2 patch only


def test_value_attention_is_softmax_of_value_similarity(tiny_model):
    torch.manual_seed(0)
    block = tiny_model.visual.transformer.resblocks[-1]
    x = torch.randn(2, 5, 128)
    with torch.no_grad():
        got = value_attention(block, x)
        h = block.ln_1(x)
        d, heads = 128, block.attn.num_heads
        v = (h @ block.attn.in_proj_weight[2 * d:].T + block.attn.in_proj_bias[2 * d:]).view(2, 5, heads, d // heads)
        v = v.permute(0, 2, 1, 3)
        w = torch.softmax(torch.einsum("bhid,bhjd->bhij", v, v) / math.sqrt(d // heads), -1)
        out = torch.einsum("bhij,bhjd->bhid", w, v).permute(0, 2, 1, 3).reshape(2, 5, d)
        expected = block.ls_1(out @ block.attn.out_proj.weight.T + block.attn.out_proj.bias)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_surgery_path_with_no_layers_is_the_ordinary_forward(tiny_model):
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(surgery_tokens(tiny_model, x, 0), vit_tokens(tiny_model, x)[0])
        path = surgery_tokens(tiny_model, x, 2)
    assert path.shape == (1, 1 + 4 * 6, 128) and not torch.allclose(path, vit_tokens(tiny_model, x)[0])
    with pytest.raises(ValueError, match="surgery_layers must lie in \\[0, 4\\]"):
        surgery_tokens(tiny_model, x, 5)


def test_freeseg_cams_through_the_labeller(tiny_clip):
    labeler = Labeler(FreeSeg(FreeSegConfig(scales=(1.0, 0.5)), tiny_clip, load_labelset("toyworld")))
    a, b = render(2_000_001, 64), render(2_000_002, 80)
    cams = labeler.cams([a.image, b.image[:48]], [["cow", "boat"], []])
    assert cams[0].shape == (2, 64, 64) and cams[1].shape == (0, 48, 80)
    assert cams[0].min() >= 0 and cams[0].max() <= 1 + 1e-6
    assert labeler.label([a.image], [["cow"]])[0].mask.max() <= 4


def test_freeseg_settings_are_checked():
    assert resolve_label_job({"input": "a", "method": "freeseg", "freeseg": {"window": 5}}).method_config.window == 5
    for bad, message in [({"window": 2}, "odd number"), ({"score": "max"}, "freeseg.score must be one of"),
                         ({"temperature": 0}, "temperature must be positive")]:
        with pytest.raises(ValueError, match=message):
            resolve_label_job({"input": "a", "method": "freeseg", "freeseg": bad})
