"""ExCEL on CLIP: known answers for the calibrated path, CLIP Surgery's scores, the attribute
bank, the affinity step, PAR, the device path and the settings."""

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss_ray.cam import caa
from wsss_ray.cam.attributes import aggregate, attribute_bank, read_descriptors
from wsss_ray.cam.excel import Excel, surgery_maps
from wsss_ray.cam.par import par, par_cams, par_weights
from wsss_ray.config import METHODS, ExcelConfig, resolve_label_job
from wsss_ray.labeler import Labeler
from wsss_ray.labelset import load_labelset
from wsss_ray.toyworld import render
from wsss_ray.vit import calibrated_attention, calibrated_tokens

try:  # the device-placement test's watch, shared rather than copied
    from tests.test_device_placement import Watch, host_steps_refused  # noqa: F401 (a fixture)
except ImportError:  # pytest run without the repository root on sys.path: tests/ is there (conftest)
    from test_device_placement import Watch, host_steps_refused  # noqa: F401

SMALL = {"dense_layers": 2, "affinity_layers": 3, "input_size": None, "max_side": 64}


# --- 1, 2: the calibrated attention and the dense path ---------------------------------------


@pytest.fixture(scope="module")
def biased_model(tiny_model):
    """The tiny model (fp32) with every bias and LayerNorm parameter randomised: open_clip
    initialises the attention biases to zero, which would hide a bias added twice or never."""
    model = copy.deepcopy(tiny_model).float().eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.visual.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif ".ln_" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
    return model


def _by_hand(model, images, dense_layers):
    """calibrated_tokens written out: every head in a loop, plain matmuls and softmax.

    Returns (final tokens, per-block original attention as a HxLxL stack per image, heads)."""
    v = model.visual
    blocks = list(v.transformer.resblocks)
    p = v.conv1.kernel_size[0]
    assert images.shape[-1] // p * p == images.shape[-1] and v.positional_embedding.shape[0] == 1 + (
        images.shape[-1] // p) ** 2  # the model's own grid: no positional interpolation
    x = v.conv1(images).flatten(2).transpose(1, 2) + v.positional_embedding[1:]
    cls = (v.class_embedding + v.positional_embedding[0]).expand(x.shape[0], 1, -1)
    x = v.ln_pre(torch.cat([cls, x], dim=1))
    width = x.shape[-1]
    heads = blocks[0].attn.num_heads
    d = width // heads
    first = len(blocks) - dense_layers
    per_block = []  # B x H x L x L of the original path's softmax(q kᵀ/√d), one per block
    dense = None
    for i, blk in enumerate(blocks):
        h = blk.ln_1(x)
        qkv = h @ blk.attn.in_proj_weight.T + blk.attn.in_proj_bias
        q, k, val = qkv[..., :width], qkv[..., width:2 * width], qkv[..., 2 * width:]
        ws, total = [], 0
        for head in range(heads):
            sl = slice(head * d, (head + 1) * d)
            qh, kh, vh = q[..., sl], k[..., sl], val[..., sl]
            ws.append(torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(d), -1))
            total = total + (torch.softmax(qh @ qh.transpose(1, 2) / math.sqrt(d), -1)
                             + torch.softmax(kh @ kh.transpose(1, 2) / math.sqrt(d), -1)
                             + torch.softmax(vh @ vh.transpose(1, 2) / math.sqrt(d), -1)) / 3
        per_block.append(torch.stack(ws, 1))
        if i == first:
            dense = x  # the dense path starts from its first block's input
        if i >= first:
            out = torch.cat([total @ val[..., head * d:(head + 1) * d] for head in range(heads)], -1)
            dense = dense + out @ blk.attn.out_proj.weight.T + blk.attn.out_proj.bias  # no MLP
        x = blk(x)  # open_clip's own forward: the original path
    final = torch.cat([x[:, :1], dense[:, 1:]], dim=1)
    return final, per_block, heads


def test_calibrated_attention_known_answers():
    b, heads, n, d = 2, 3, 4, 5
    same = torch.randn(b, heads, 1, d).expand(b, heads, n, d)  # identical rows: every softmax uniform
    w = calibrated_attention(same, same * 2, same - 1)
    assert w.shape == (b, 1, n, n)
    torch.testing.assert_close(w, torch.full((b, 1, n, n), heads / n))  # summed over heads
    torch.testing.assert_close(w.sum(-1), torch.full((b, 1, n), float(heads)))
    # orthogonal rows of a large norm give the identity; the result is the mean of the three maps
    sharp = (100 * torch.eye(n)).expand(b, heads, n, n)
    w = calibrated_attention(same[..., :n], sharp, sharp)
    expected = heads * (torch.full((n, n), 1 / n) + 2 * torch.eye(n)) / 3
    torch.testing.assert_close(w[:, 0], expected.expand(b, n, n))
    # q, k and v are treated alike: a permutation of them changes nothing
    q, k, v = (torch.randn(b, heads, n, d) for _ in range(3))
    torch.testing.assert_close(calibrated_attention(q, k, v), calibrated_attention(v, q, k))
    torch.testing.assert_close(calibrated_attention(q, k, v).sum(-1), torch.full((b, 1, n), float(heads)))


def test_calibrated_tokens_equal_the_written_out_computation(biased_model, dense_layers=2):
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = calibrated_tokens(biased_model, images, dense_layers, attention_layers=4)
        expected, per_block, heads = _by_hand(biased_model, images, dense_layers)
        ordinary = biased_model.visual.transformer(
            biased_model.visual.ln_pre(torch.cat([(biased_model.visual.class_embedding
                                                   + biased_model.visual.positional_embedding[0]).expand(2, 1, -1),
                                                  biased_model.visual.conv1(images).flatten(2).transpose(1, 2)
                                                  + biased_model.visual.positional_embedding[1:]], 1)))
    assert got.tokens.shape == (2, 1 + 64, 128)
    torch.testing.assert_close(got.tokens, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.tokens[:, 0], ordinary[:, 0], atol=1e-4, rtol=1e-4)  # the original class token
    assert not torch.allclose(got.tokens[:, 1:], ordinary[:, 1:], atol=1e-2)  # the patches are the dense path's
    first = 4 - dense_layers
    assert len(got.attention) == len(per_block) == 4
    for i, (a, w) in enumerate(zip(got.attention, per_block)):
        torch.testing.assert_close(a, w.sum(1) if i >= first else w.mean(1), atol=1e-5, rtol=1e-5)


def test_the_dense_path_has_no_mlp_and_adds_the_bias_once(biased_model):
    """The same block output with the MLP added, or the bias added per head, is not what comes back."""
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    blk = biased_model.visual.transformer.resblocks[-1]
    with torch.no_grad():
        got = calibrated_tokens(biased_model, images, 1).tokens
        expected, _, heads = _by_hand(biased_model, images, 1)
        bias = blk.attn.out_proj.bias
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert (got[0, 1:] - (expected[0, 1:] + (heads - 1) * bias)).abs().max() > 0.1
    assert (got[0, 1:] - (expected[0, 1:] + blk.mlp(blk.ln_2(expected[0, 1:])))).abs().max() > 0.1


@pytest.mark.parametrize("attention_layers", [0, 1, 2, 3, 4])
def test_the_returned_attention_is_head_mean_before_the_dense_blocks_and_head_sum_in_them(tiny_model,
                                                                                       attention_layers):
    heads = tiny_model.visual.transformer.resblocks[0].attn.num_heads
    assert heads > 1
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = calibrated_tokens(tiny_model, images, 2, attention_layers)
    assert len(out.attention) == attention_layers
    sums = [float(heads) if block >= 2 else 1.0 for block in range(4 - attention_layers, 4)]  # blocks 2, 3: dense
    for a, s in zip(out.attention, sums):
        assert a.shape == (2, 65, 65)
        torch.testing.assert_close(a.sum(-1), torch.full((2, 65), s), atol=1e-4, rtol=0)


def test_calibrated_tokens_check_their_layer_counts(tiny_model):
    images = torch.randn(1, 3, 64, 64)
    for bad in (0, 5):
        with pytest.raises(ValueError, match="dense_layers must lie in \\[1, 4\\]"):
            calibrated_tokens(tiny_model, images, bad)


def test_more_attention_layers_than_blocks_is_refused(tiny_model):
    images = torch.randn(1, 3, 64, 64)
    for layers in (5, 6):
        with torch.no_grad(), pytest.raises(ValueError, match="affinity_layers must lie in \\[0, 4\\]"):
            calibrated_tokens(tiny_model, images, 2, layers)


# --- 3: CLIP Surgery's redundancy removal -------------------------------------------------------


def test_surgery_maps_equal_the_explicit_product():
    g = torch.Generator().manual_seed(0)
    b, tokens, texts, e = 2, 7, 5, 6
    features = torch.randn(b, tokens, e, generator=g)
    text = torch.randn(texts, e, generator=g)
    got = surgery_maps(features, text)
    # CLIP Surgery as its authors write it, with the B x (1+N) x T x E product
    prob = (2 * (features[:, :1] @ text.T)).softmax(-1)                    # B x 1 x T
    w = prob / prob.mean(-1, keepdim=True)
    feats = features[:, :, None, :] * text[None, None] * w[..., None]     # B x (1+N) x T x E
    feats = feats - feats.mean(2, keepdim=True)
    sim = feats.sum(-1)                                                    # B x (1+N) x T
    lo, hi = sim.amin(1, keepdim=True), sim.amax(1, keepdim=True)
    expected = (sim - lo) / (hi - lo)
    assert got.shape == (b, tokens, texts)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert got.min() >= 0 and got.max() <= 1
    torch.testing.assert_close(got.amin(1), torch.zeros(b, texts))
    torch.testing.assert_close(got.amax(1), torch.ones(b, texts))
    assert not torch.allclose(got[0], surgery_maps(features[1:], text)[0])  # each image has its own weights


# --- 4: text semantic enrichment ----------------------------------------------------------------


def _descriptions(labelset, per_class=2):
    things = ["{} on a table", "A {} in the rain", "a small {}", "the shadow of a {}"]
    return {c.name: [t.format(c.name) for t in things[:per_class]] for c in labelset.classes}


def test_aggregate_drops_the_least_similar_centre():
    g = torch.Generator().manual_seed(1)
    classes = F.normalize(torch.rand(2, 8, generator=g) + 0.5, dim=-1)   # positive: both far from -(c0 + c1)
    bank = torch.randn(10, 8, generator=g)
    bank[9] = -(classes[0] + classes[1])                                 # every class's least similar centre
    logits = classes @ bank.T
    assert (logits.argmin(1) == 9).all()
    masked = logits.clone()
    masked[:, 9] = float("-inf")
    expected = F.normalize(masked.softmax(-1) @ bank + classes, dim=-1)
    got = aggregate(classes, bank, 0.1)                                 # int(0.1 * 10) = 1 centre dropped
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(2))
    moved = bank.clone()
    moved[9] *= 3                                                        # still the least similar: zero weight
    torch.testing.assert_close(aggregate(classes, moved, 0.1), got)
    kept = F.normalize(logits.softmax(-1) @ bank + classes, dim=-1)
    torch.testing.assert_close(aggregate(classes, bank, 0.0), kept)
    assert not torch.allclose(kept, got, atol=1e-4)


def test_read_descriptors_errors(tmp_path):
    toyworld = load_labelset("toyworld")
    good = _descriptions(toyworld)
    path = tmp_path / "good.json"
    path.write_text(json.dumps(good))
    assert read_descriptors(str(path), toyworld) == good
    cases = {"missing": {**good, "boat": []}, "list": [["a boat"]], "numbers": {**good, "car": [1, 2]},
             "text": "not json {"}
    messages = {"missing": "no sentences for \\['boat'\\]", "list": "not a JSON object", "numbers": "not a JSON object",
                "text": "could not be read as JSON"}
    for name, data in cases.items():
        bad = tmp_path / f"{name}.json"
        bad.write_text(data if isinstance(data, str) else json.dumps(data))
        with pytest.raises(ValueError, match=messages[name]) as info:
            read_descriptors(str(bad), toyworld)
        assert "\n" not in str(info.value)
    dropped = dict(good)
    del dropped["cow"]
    (tmp_path / "dropped.json").write_text(json.dumps(dropped))
    with pytest.raises(ValueError, match="no sentences for \\['cow'\\]"):
        read_descriptors(str(tmp_path / "dropped.json"), toyworld)


def test_attribute_bank_is_the_k_means_of_the_normalised_sentences(tiny_clip):
    descriptors = _descriptions(load_labelset("toyworld"))
    bank = attribute_bank(tiny_clip, descriptors, 4)
    sentences = [s.lower() for group in descriptors.values() for s in group]
    with torch.no_grad():
        features = F.normalize(tiny_clip.model.encode_text(tiny_clip.tokenizer(sentences)).float(), dim=-1)
    assert bank.shape == (4, features.shape[1]) and bank.dtype == torch.float32
    nearest = torch.cdist(features, bank).argmin(1)
    assert len(set(nearest.tolist())) == 4
    for c in range(4):  # a converged k-means centre is the mean of its members
        torch.testing.assert_close(bank[c], features[nearest == c].mean(0), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="clusters \\(17\\) must be at most the number of descriptions \\(16\\)"):
        attribute_bank(tiny_clip, descriptors, 17)


def test_a_labeller_with_descriptors_enriches_its_classes_and_labels(tmp_path):
    descriptors = _descriptions(load_labelset("toyworld"))
    path = tmp_path / "descriptors.json"
    path.write_text(json.dumps(descriptors))
    rich = Labeler.from_spec("toyclip", "toyworld", method="excel",
                             settings={**SMALL, "par_iters": 0, "descriptors": str(path), "clusters": 4,
                                       "drop_share": 0.25})  # int(0.25 * 4): one centre dropped
    plain = Labeler(Excel(ExcelConfig(**SMALL, par_iters=0), rich.method.clip, rich.labelset))
    torch.testing.assert_close(rich.method.text.classes, plain.method.text.classes)
    assert plain.method.classes is plain.method.text.classes
    bank = attribute_bank(rich.method.clip, descriptors, 4)
    expected = aggregate(rich.method.text.classes, bank, 0.25)
    torch.testing.assert_close(rich.method.classes, expected)
    assert not torch.allclose(rich.method.classes, aggregate(rich.method.text.classes, bank, 0.0), atol=1e-4)
    assert not torch.allclose(rich.method.classes, plain.method.classes, atol=1e-3)
    torch.testing.assert_close(rich.method.rows, torch.cat([expected, plain.method.text.background]))
    a = render(4_000_001, 64)
    result = rich.label([a.image], [["cow", "boat"]])[0]
    assert result.mask.shape == (64, 64) and result.mask.max() <= 8 and result.cams.shape == (2, 64, 64)


# --- 5: the class-aware affinity -----------------------------------------------------------------


def _boxes(cam, border):
    return caa.box_masks(torch.from_numpy(np.asarray(cam, np.float32))[None], 0.4, border)[0].numpy()


def test_reference_boxes_lose_the_last_row_and_column():
    cam = np.zeros((6, 8), np.float32)
    cam[1, 1], cam[2, 1:4] = 1.0, 0.9       # inside: box rows 1-2, columns 1-3
    cam[4, 6], cam[5, 7] = 0.8, 0.7         # touches the last row and column: box rows 4-5, columns 6-7
    cam[0, 5] = 0.9                         # touches the first row only
    keep = np.zeros((6, 8), bool)
    keep[1:3, 1:4] = keep[4:6, 6:8] = keep[0, 5] = True
    reference = keep.copy()
    reference[5, :] = reference[:, 7] = False
    np.testing.assert_array_equal(_boxes(cam, "keep"), keep)
    np.testing.assert_array_equal(_boxes(cam, "reference"), reference)
    assert reference[4, 6] and reference[1:3, 1:4].all() and reference[0, 5]
    edge = np.zeros((4, 4), np.float32)
    edge[3, 1:3] = 1.0                      # a region on the last row only has an empty box there
    assert not _boxes(edge, "reference").any() and _boxes(edge, "keep").sum() == 2
    with pytest.raises(ValueError, match="border must be one of"):
        caa.box_masks(torch.zeros(1, 4, 4), 0.4, "clip")


@pytest.fixture(scope="module")
def batch(tiny_clip):
    method = Excel(ExcelConfig(**SMALL, par_iters=0), tiny_clip, load_labelset("toyworld"))
    images = [render(4_100_000 + i, 64).image for i in range(2)]
    x = torch.stack([method.model_input(torch.from_numpy(img), method.input_size(64, 64, 1.0)) for img in images])
    return method, x, [[0, 3], [5]]


def test_grid_maps_without_the_affinity_are_the_raw_maps(tiny_clip, batch):
    _, x, ids = batch
    method = Excel(ExcelConfig(**SMALL, par_iters=0, affinity=False), tiny_clip, load_labelset("toyworld"))
    maps = method.grid_maps(x, ids)
    for raw, refined, i in zip(maps.raw, maps.refined, ids):
        assert raw.shape == (len(i), 8, 8)
        torch.testing.assert_close(refined, raw)


def test_grid_maps_by_hand(batch):
    method, x, ids = batch
    cfg = method.config
    maps = method.grid_maps(x, ids)
    model = method.clip.model
    with torch.no_grad():
        out = calibrated_tokens(model, x, cfg.dense_layers, cfg.affinity_layers)
        feats = model.visual.ln_post(out.tokens) @ model.visual.proj
        scores = surgery_maps(F.normalize(feats, dim=1), torch.cat([method.classes, method.text.background]))
        attention = torch.stack([a[:, 1:, 1:] for a in out.attention]).mean(0)
    assert len(out.attention) == 3
    for b, i in enumerate(ids):
        raw = scores[b, 1:, i].T.reshape(len(i), 8, 8)
        torch.testing.assert_close(maps.raw[b], raw)
        aff = caa.affinity(attention[b], cfg.sinkhorn_iters, cfg.affinity_power)
        expected = caa.refine(raw, aff, cfg.box_threshold, border="reference")
        torch.testing.assert_close(maps.refined[b], expected)
        assert not torch.allclose(maps.refined[b], raw)
        keep = caa.refine(raw, aff, cfg.box_threshold, border="keep")
        if not torch.equal(caa.box_masks(raw, cfg.box_threshold, "keep"), caa.box_masks(raw, cfg.box_threshold,
                                                                                        "reference")):
            assert not torch.allclose(maps.refined[b], keep)


# --- 6: pixel-adaptive refinement ---------------------------------------------------------------


def test_par_known_answers():
    g = torch.Generator().manual_seed(2)
    guide = torch.rand(1, 3, 12, 10, generator=g)
    scores = torch.rand(1, 4, 12, 10, generator=g)
    torch.testing.assert_close(par(guide, scores, iters=0), scores)
    weights = par_weights(guide, (1, 2, 4))
    assert weights.shape == (1, 24, 12, 10)
    torch.testing.assert_close(weights.sum(1), torch.full((1, 12, 10), 1.01))
    constant = torch.full((1, 2, 12, 10), 0.6)
    for iters in (1, 3, 7):
        torch.testing.assert_close(par(guide, constant, iters, (1, 2, 4)),
                                   torch.full_like(constant, 0.6 * 1.01 ** iters), atol=0, rtol=1e-5)


def test_par_diffuses_within_a_flat_half_more_than_across_the_edge():
    guide = torch.zeros(1, 3, 24, 24)
    guide[..., 12:] = 1.0                                # a black left half, a white right half
    guide[:, 0, :, 12:] = 0.5
    scores = torch.zeros(1, 1, 24, 24)
    scores[..., 11] = 1.0                                # the last column of the left half
    out = par(guide, scores, iters=5, dilations=(1, 2))[0, 0]
    within, across = out[:, 9].mean(), out[:, 13].mean()  # two columns away on each side
    assert within > 0.05 and within > 20 * across, (within, across)
    assert out[:, :12].sum() > 50 * out[:, 12:].sum()


def test_par_cams_background_wins_where_pars_does():
    g = torch.Generator().manual_seed(3)
    cams = torch.rand(3, 16, 20, generator=g)
    guide = torch.rand(3, 16, 20, generator=g)
    out = par_cams(guide, cams, 4, (1, 2), None)
    assert out.shape == cams.shape and out.min() >= 0 and out.max() <= 1
    s = par(guide[None], torch.cat([1 - cams.amax(0, keepdim=True), cams])[None], 4, (1, 2))[0].clamp_min(0)
    bg_par = s[0] > s[1:].amax(0)
    bg_cams = 1 - out.amax(0) > out.amax(0)
    assert 0 < bg_par.sum() < bg_par.numel()        # both outcomes occur on this input
    assert torch.equal(bg_cams, bg_par)
    assert torch.equal(out.argmax(0), s[1:].argmax(0))
    assert par_cams(guide, cams, 2, (1,), 8).shape == cams.shape   # refined small, brought back


# --- 7, 8: the device path and the tagger ---------------------------------------------------------


def test_every_excel_step_after_decoding_runs_on_the_device_path(host_steps_refused):
    labeler = Labeler.from_spec("toyclip", "toyworld", method="excel", precision="fp32",
                                settings={**SMALL, "par_iters": 3},
                                post={"crf": {"backend": "torch", "downsample": 1}})
    labeler.post_on_device = True  # on a CPU, as a GPU actor sets it
    images = [render(3_000_000 + i, 64).image for i in range(3)]
    labels = [["cow"], ["boat", "car"], []]
    assert all(labeler.fits_device(image) for image in images)
    watch = Watch("cpu")
    with watch:
        cams = labeler.cam_tensors(images, labels)
        done = labeler.masks_on_device(images, cams, labels)
    assert set(watch.to_host) == {"wsss_ray.post.to_host"}, watch.to_host
    assert watch.copies == 2
    for (mask, confidence, quality, label_quality), lab in zip(done, labels):
        assert mask.shape == confidence.shape == (64, 64) and mask.dtype == np.uint8
        assert 0 <= quality <= 1 and len(label_quality) == len(lab)


def test_excel_labels_with_the_tagger():
    labeler = Labeler.from_spec("toyclip", "toyworld", method="excel", settings={**SMALL, "par_iters": 2})
    images = [render(4_200_000 + i, 64).image for i in range(2)]
    results = labeler.label(images)
    names = {c.name for c in labeler.labelset.classes}
    assert len(results) == 2
    for r in results:
        assert r.mask.shape == (64, 64) and r.mask.dtype == np.uint8
        assert set(r.labels) <= names and r.cams.shape == (len(r.labels), 64, 64)
        assert r.mask.max() <= len(names)


# --- 9: registry and settings -----------------------------------------------------------------------


def test_excel_is_registered_and_its_settings_are_checked(tiny_clip):
    assert METHODS["excel"].load() is Excel and METHODS["excel"].settings_class() is ExcelConfig
    job = resolve_label_job({"input": "a", "method": "excel", "excel": {"dense_layers": 3, "par_iters": 0}})
    assert isinstance(job.method_config, ExcelConfig) and job.method_config.dense_layers == 3
    for bad, message in [({"input_norm": "x"}, "excel.input_norm must be one of"),
                         ({"box_threshold": 1.5}, "excel.box_threshold must lie in \\(0, 1\\)"),
                         ({"box_threshold": 0.0}, "excel.box_threshold must lie in \\(0, 1\\)"),
                         ({"par_dilations": ()}, "excel.par_dilations must be positive"),
                         ({"par_dilations": (1, 0)}, "excel.par_dilations must be positive"),
                         ({"drop_share": 1.0}, "excel.drop_share must lie in \\[0, 1\\)"),
                         ({"dense_layers": 0}, "dense_layers must be at least 1"),
                         ({"clusters": 0}, "clusters must be at least 1"),
                         ({"par_iters": -1}, "par_iters must be at least 0"),
                         ({"input_size": 0}, "excel.input_size must be a whole number")]:
        with pytest.raises(ValueError, match=message) as info:
            ExcelConfig(**bad)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="excel.input_norm"):
        resolve_label_job({"input": "a", "method": "excel", "excel": {"input_norm": "x"}})
    toyworld = load_labelset("toyworld")
    for settings in ({"dense_layers": 5}, {"affinity_layers": 5}):
        with pytest.raises(ValueError, match="must be at most this model's 4 blocks"):
            Excel(ExcelConfig(**{**SMALL, **settings}), tiny_clip, toyworld)
