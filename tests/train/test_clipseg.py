"""--arch clip: the frozen labelling CLIP under a trained decoder (toyclip, no Ray)."""

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from wsss_ray.clip import bundled_toyclip_dir
from wsss_ray.train.losses import ce_loss
from wsss_ray.train.model import build_model, load_checkpoint, save_checkpoint

TOY = {"model": "toyclip"}


def _fit(model, steps: int = 3, seed: int = 0) -> None:
    torch.manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    model.train()
    for _ in range(steps):
        x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 9, (4, 64, 64))
        loss = ce_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_the_tower_gets_no_gradient_and_keeps_its_weights():
    model = build_model(9, "clip", options=TOY)
    tower = model.backbone
    assert tower is model.net.clip.visual and not hasattr(model.net.clip, "transformer")  # text tower dropped
    before, decoder_before = _snapshot(tower), _snapshot(model.net.decoder)
    assert not any(p.requires_grad for p in tower.parameters())
    _fit(model)
    assert all(p.grad is None for p in tower.parameters())
    after = tower.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    changed = [k for k, v in model.net.decoder.state_dict().items() if not torch.equal(decoder_before[k], v)]
    assert len(changed) > len(decoder_before) // 2


def test_unfreeze_trains_only_the_last_blocks():
    model = build_model(9, "clip", options={**TOY, "unfreeze": 1})
    before = _snapshot(model.backbone)
    _fit(model)
    after = model.backbone.state_dict()
    moved = {k.split(".")[2] for k in before if not torch.equal(before[k], after[k])}
    assert moved == {"3"}                     # toyclip has 4 blocks: only the last one trained
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("transformer.resblocks.3."))


@pytest.mark.parametrize("options", [{}, {"unfreeze": 2, "feature_blocks": 3}, {"clip_scale": 2.0}])
def test_logits_at_any_input_size(options):
    model = build_model(5, "clip", options={**TOY, **options}).eval()
    with torch.no_grad():
        for size in [(64, 64), (37, 90)]:   # 37x90 is not a multiple of the 8-pixel patch
            assert model(torch.randn(2, 3, *size)).shape == (2, 5, *size)


def test_checkpoint_holds_only_what_trained_and_reloads_the_same_model(tmp_path):
    model = build_model(9, "clip", options={**TOY, "unfreeze": 1})
    _fit(model, steps=2)
    path = save_checkpoint(tmp_path / "model.pt", model, {"labelset": "toyworld"})
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert {k.split(".")[1] for k in saved} == {"clip", "decoder"}
    assert {k.split(".")[5] for k in saved if k.startswith("net.clip.")} == {"3"}   # the unfrozen block alone
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert trainable * 4 < path.stat().st_size < trainable * 4 + 100_000 < frozen * 4
    loaded, meta = load_checkpoint(path)
    assert meta["options"]["model"] == "toyclip" and meta["options"]["unfreeze"] == 1
    assert len(meta["backbone_sha256"]) == 64
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))


def test_a_checkpoint_refuses_a_backbone_with_other_weights(tmp_path):
    folder = tmp_path / "clip"
    shutil.copytree(bundled_toyclip_dir(), folder)
    model = build_model(9, "clip", options={"model": f"local-dir:{folder}"})
    path = save_checkpoint(tmp_path / "model.pt", model)
    assert load_checkpoint(path)[1]["options"]["model"] == f"local-dir:{folder}"
    weights = folder / "open_clip_model.safetensors"
    tensors = load_file(weights)
    tensors["visual.proj"] = tensors["visual.proj"] + 0.01
    save_file(tensors, weights)
    with pytest.raises(ValueError, match=r"was trained on the .*clip' backbone with weights sha256 \w+\.\.\., but"):
        load_checkpoint(path)


def test_the_feature_cache_serves_repeated_crops_with_the_same_logits():
    torch.manual_seed(0)
    plain = build_model(9, "clip", options=TOY).eval()
    cached = build_model(9, "clip", options={**TOY, "feature_cache_mb": 16}).eval()
    cached.load_state_dict(plain.state_dict())
    crops = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        first = cached(crops)
        again = cached(torch.cat([crops[1:], torch.randn(1, 3, 64, 64)]))
        assert torch.allclose(first, plain(crops), atol=1e-5)
        assert torch.allclose(again[:2], first[1:], atol=1e-5)
    cache = cached.net.cache
    assert (cache.hits, cache.misses, len(cache.entries)) == (2, 4, 4)
    tiny = build_model(9, "clip", options={**TOY, "feature_cache_mb": 0.01}).eval()
    with torch.no_grad():
        tiny(crops)
    assert len(tiny.net.cache.entries) == 0            # over its memory: computes, keeps nothing


def test_bad_clip_settings_are_one_sentence_errors():
    with pytest.raises(ValueError, match="needs the labelling CLIP"):
        build_model(9, "clip")
    with pytest.raises(ValueError, match=r"unfreeze must lie in \[0, 4\]"):
        build_model(9, "clip", options={**TOY, "unfreeze": 5})
    with pytest.raises(ValueError, match="takes no settings"):
        build_model(9, "tiny", options=TOY)
    with pytest.raises(ValueError, match="not --backbone-weights"):
        build_model(9, "clip", backbone_weights="x.pt", options=TOY)


def test_the_input_rows_name_the_backbone(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from wsss_ray.config import TrainConfig
    from wsss_ray.store import OUTPUT_SCHEMA
    from wsss_ray.train.trainer import arch_options

    rows = {c: [None] * 4 for c in OUTPUT_SCHEMA.names}
    rows.update(id=list("abcd"), status=["ok", "ok", "ok", "error"], model=["toyclip", "toyclip", None, "other"])
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table(rows, schema=OUTPUT_SCHEMA), tmp_path / "in" / "part-0.parquet")
    options = arch_options(TrainConfig(input=str(tmp_path / "in"), arch="clip", unfreeze=1))
    assert options["model"] == "toyclip" and options["unfreeze"] == 1 and options["pretrained"] is None
    assert arch_options(TrainConfig(input=str(tmp_path / "in"), arch="clip", model="local-dir:x"))["model"] == \
        "local-dir:x"
    assert arch_options(TrainConfig(input=str(tmp_path / "in"))) == {}
    rows["model"] = [None] * 4
    pq.write_table(pa.table(rows, schema=OUTPUT_SCHEMA), tmp_path / "in" / "part-0.parquet")
    with pytest.raises(ValueError, match="name none; pass --model"):
        arch_options(TrainConfig(input=str(tmp_path / "in"), arch="clip"))
