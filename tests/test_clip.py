import copy
import json
from types import SimpleNamespace

import huggingface_hub.constants
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

import wsss_ray.clip as clip_mod
from wsss_ray.clip import TOYCLIP_CONFIG, ClipLoadError, bundled_toyclip_dir, load_clip, parse_spec
from wsss_ray.vit import block_attention, block_forward, interpolate_pos_embed, pool_tokens, vit_tokens



def _half_rounded(model):
    """A copy of `model` with every float weight rounded through float16 (what save_local_dir stores)."""
    m = copy.deepcopy(model)
    m.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    return m


def _images(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """No HF_HUB_OFFLINE anywhere, an empty HF cache, and a hub that cannot be reached."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(clip_mod, "_hub_reachable", lambda *a, **k: False)


# ------------------------------------------------------------------ specs and loading


def test_parse_spec_kinds():
    assert parse_spec("toyclip") == ("toyclip", str(bundled_toyclip_dir()))
    assert parse_spec("local-dir:/some/folder") == ("local-dir", "/some/folder")
    assert parse_spec("hf-hub:laion/CLIP-ViT-B-16") == ("hf-hub", "laion/CLIP-ViT-B-16")
    assert parse_spec("ViT-B-16") == ("open_clip", "ViT-B-16")


def test_load_bundled_toyclip():
    loaded = load_clip("toyclip")
    assert loaded.spec == "toyclip"
    assert loaded.patch_size == 8
    assert not loaded.model.training
    with torch.no_grad():
        emb = loaded.model.encode_image(_images(1, 3, 64, 64))
    assert emb.shape == (1, TOYCLIP_CONFIG["embed_dim"])
    assert torch.isfinite(emb).all()


def test_missing_bundled_weights_raise_clearly(monkeypatch, tmp_path):
    monkeypatch.setattr(clip_mod, "bundled_toyclip_dir", lambda: tmp_path)
    with pytest.raises(ClipLoadError, match="bundled toyclip"):
        load_clip("toyclip")


def test_missing_local_dir_raises(tmp_path):
    with pytest.raises(ClipLoadError, match="open_clip_config.json"):
        load_clip(f"local-dir:{tmp_path / 'nothing'}")


def test_save_local_dir_writes_fp16_and_config(tiny_model, tiny_dir):
    config = json.loads((tiny_dir / "open_clip_config.json").read_text())
    assert config["model_cfg"] == TOYCLIP_CONFIG
    assert config["preprocess_cfg"]["mean"] == list(open_clip.OPENAI_DATASET_MEAN)
    state = load_file(str(tiny_dir / "open_clip_model.safetensors"))
    assert set(state) == set(tiny_model.state_dict())
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())


def test_local_dir_round_trip(tiny_model, tiny_clip):
    loaded = tiny_clip.model
    assert not loaded.training
    ref = _half_rounded(tiny_model)
    for k, v in ref.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = _images(2, 3, 64, 64)
    with torch.no_grad():
        a = loaded.encode_image(x)
        b = ref.encode_image(x)
        c = tiny_model.encode_image(x)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert float((a - c).norm() / c.norm()) < 1e-2  # fp16 storage barely moves the output
    assert tiny_clip.patch_size == 8
    assert tiny_clip.mean == tuple(open_clip.OPENAI_DATASET_MEAN)
    assert tiny_clip.std == tuple(open_clip.OPENAI_DATASET_STD)
    assert tiny_clip.tokenizer(["a photo of a cow."]).shape == (1, TOYCLIP_CONFIG["text_cfg"]["context_length"])
    assert tiny_clip.preprocess(Image.new("RGB", (100, 80))).shape == (3, 64, 64)


def test_open_clip_name_with_local_pretrained_file(monkeypatch, tiny_model, tiny_dir):
    """An open_clip architecture name + a local weights file loads those weights, offline."""
    name = "wsss-test-tiny"
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, name, copy.deepcopy(TOYCLIP_CONFIG))
    weights = tiny_dir / "open_clip_model.safetensors"
    loaded = load_clip(name, pretrained=str(weights))
    for k, v in _half_rounded(tiny_model).state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    assert loaded.spec == name


def test_pretrained_tag_offline_fails_fast(offline_hub):
    with pytest.raises(ClipLoadError) as e:
        load_clip("ViT-B-16", pretrained="openai")
    msg = str(e.value)
    assert "local-dir" in msg and "--pretrained" in msg
    assert "ViT-B-16" in msg and "openai" in msg


def test_hf_hub_offline_fails_fast(offline_hub):
    with pytest.raises(ClipLoadError, match="local-dir"):
        load_clip("hf-hub:nobody/no-such-clip")


def test_unknown_model_name_lists_choices():
    with pytest.raises(ClipLoadError) as e:
        load_clip("no-such-model")
    msg = str(e.value)
    assert "no-such-model" in msg
    for choice in ("list_models", "local-dir:", "hf-hub:", "toyclip"):
        assert choice in msg


def test_missing_pretrained_file_is_treated_as_download(tmp_path):
    assert clip_mod._needs_download("open_clip", str(tmp_path / "missing.safetensors"))
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"")
    assert not clip_mod._needs_download("open_clip", str(f))
    assert clip_mod._needs_download("hf-hub", None)
    assert not clip_mod._needs_download("local-dir", "x")


# ------------------------------------------------------------------ vision hooks


@pytest.mark.parametrize("hw", [(64, 64), (64, 96), (128, 128), (40, 24)])
def test_vit_tokens_any_patch_aligned_size(tiny_model, hw):
    h, w = hw
    with torch.no_grad():
        tokens, attn = vit_tokens(tiny_model, _images(2, 3, h, w))
    assert tokens.shape == (2, 1 + (h // 8) * (w // 8), 128)
    assert attn == []


def test_vit_tokens_reproduce_open_clip_forward(tiny_model):
    """At the native size, the hooks + CLIP-ES pooling equal open_clip's own image tower."""
    x = _images(2, 3, 64, 64)
    with torch.no_grad():
        tokens, _ = vit_tokens(tiny_model, x)
        torch.testing.assert_close(pool_tokens(tiny_model, tokens), tiny_model.visual(x), atol=1e-5, rtol=1e-5)


def test_vit_tokens_rejects_unaligned_size(tiny_model):
    with pytest.raises(ValueError, match="multiple of the patch size"):
        vit_tokens(tiny_model, torch.zeros(1, 3, 60, 64))


def test_interpolate_pos_embed_native_is_unchanged(tiny_model):
    pos = tiny_model.visual.positional_embedding
    assert interpolate_pos_embed(tiny_model, (8, 8)) is pos


def test_interpolate_pos_embed_known_values():
    side, d = 8, 3
    pos = _images(1 + side * side, d)
    stub = SimpleNamespace(visual=SimpleNamespace(positional_embedding=pos))
    grid = pos[1:].reshape(side, side, d).permute(2, 0, 1)
    # bilinear (align_corners=False) halving = 2x2 average pooling
    half = interpolate_pos_embed(stub, (4, 4))
    assert half.shape == (1 + 16, d)
    assert torch.equal(half[0], pos[0])  # class position kept
    expected = F.avg_pool2d(grid[None], 2)[0].permute(1, 2, 0).reshape(16, d)
    torch.testing.assert_close(half[1:], expected)
    # a constant grid stays constant at any size
    const = torch.cat([pos[:1], torch.full((side * side, d), 0.25)])
    wide = interpolate_pos_embed(SimpleNamespace(visual=SimpleNamespace(positional_embedding=const)), (5, 12))
    assert wide.shape == (1 + 60, d)
    torch.testing.assert_close(wide[1:], torch.full((60, d), 0.25))


def test_block_attention_is_a_distribution(tiny_model):
    blk = tiny_model.visual.transformer.resblocks[1]
    x = _images(2, 17, 128)
    with torch.no_grad():
        w = block_attention(blk, x)
        per_head = block_attention(blk, x, average_heads=False)
    assert w.shape == (2, 17, 17)
    assert per_head.shape == (2, blk.attn.num_heads, 17, 17)
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 17))
    torch.testing.assert_close(per_head.mean(1), w)


def test_block_attention_reproduces_the_block(tiny_model):
    """softmax(qk)·v through out_proj equals the block's own attention output."""
    blk = tiny_model.visual.transformer.resblocks[2]
    x = _images(2, 17, 128, seed=3)
    d, heads = 128, blk.attn.num_heads
    with torch.no_grad():
        w = block_attention(blk, x, average_heads=False)
        h = blk.ln_1(x)
        v = F.linear(h, blk.attn.in_proj_weight[2 * d:], blk.attn.in_proj_bias[2 * d:])
        v = v.view(2, 17, heads, d // heads).transpose(1, 2)
        out = blk.attn.out_proj((w @ v).transpose(1, 2).reshape(2, 17, d))
        ref, ref_w = blk.attn(h, h, h, need_weights=True, average_attn_weights=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(w.mean(1), ref_w, atol=1e-6, rtol=1e-4)


def test_block_attention_is_differentiable(tiny_model):
    blk = tiny_model.visual.transformer.resblocks[0]
    x = _images(1, 5, 128).requires_grad_()
    block_attention(blk, x)[0, 0, 1].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_vit_tokens_capture(tiny_model):
    blocks = tiny_model.visual.transformer.resblocks
    x = _images(2, 3, 64, 64)
    with torch.no_grad():
        tokens, attn = vit_tokens(tiny_model, x, capture=2)
        before_last, _ = vit_tokens(tiny_model, x, stop_at=len(blocks) - 1)
        expected_last = block_attention(blocks[-1], before_last)
    assert len(attn) == 2
    assert all(a.shape == (2, 65, 65) for a in attn)
    torch.testing.assert_close(attn[-1], expected_last)
    torch.testing.assert_close(attn[0].sum(-1), torch.ones(2, 65))


def test_key_similarity_source_is_softmax_of_key_products(tiny_model):
    """source='keys' is softmax(k kᵀ/√d) per head, from the block's own key projection."""
    block = tiny_model.visual.transformer.resblocks[-1]
    d = tiny_model.visual.transformer.width
    heads = block.attn.num_heads
    x = torch.randn(2, 9, d)
    with torch.no_grad():
        w = block_attention(block, x, average_heads=False, source="keys")
        k = torch.nn.functional.linear(block.ln_1(x), block.attn.in_proj_weight[d:2 * d], block.attn.in_proj_bias[d:2 * d])
        k = k.view(2, 9, heads, d // heads).transpose(1, 2)
        expected = torch.softmax(k @ k.transpose(-2, -1) / (d // heads) ** 0.5, dim=-1)
    assert torch.allclose(w, expected, atol=1e-6)
    with pytest.raises(ValueError, match="attention source"):
        block_attention(block, x, source="values")


@pytest.mark.parametrize("capture", [None, "attention", "keys"])
def test_block_forward_is_the_block(tiny_model, capture):
    """The written-out block gives the block's own output, and keeps the map it was asked for."""
    blk = tiny_model.visual.transformer.resblocks[1]
    x = _images(2, 17, 128, seed=5)
    with torch.no_grad():
        out, kept = block_forward(blk, x, capture=capture)
        torch.testing.assert_close(out, blk(x), atol=1e-5, rtol=1e-5)
        if capture is None:
            assert kept is None
        else:
            torch.testing.assert_close(kept, block_attention(blk, x, source=capture))
        given, _ = block_forward(blk, x, qkv=torch.zeros(2, 17, 3 * 128))  # the projection taken as given
        assert not torch.allclose(given, out)
