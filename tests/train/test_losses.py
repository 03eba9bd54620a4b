import math

import pytest
import torch
import torch.nn.functional as F

from wsss_ray.train.losses import IGNORE_INDEX, LOSSES, ce_loss, cgl_loss, make_loss


def _data(seed=0, n=2, c=4, h=6, w=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g, requires_grad=True)
    mask = torch.randint(0, c, (n, h, w), generator=g)
    mask[0, 0, :2] = IGNORE_INDEX
    conf = torch.rand(n, h, w, generator=g)
    return logits, mask, conf


def test_cgl_hand_computed_two_pixels():
    logits = torch.tensor([[[[0.0, 2.0]], [[0.0, 0.0]]]])  # 1x2x1x2: pixel a = (0, 0), pixel b = (2, 0)
    mask = torch.tensor([[[0, 1]]])
    a, b = math.log(2), math.log(1 + math.e ** 2)
    assert cgl_loss(logits, mask, torch.tensor([[[1.0, 1.0]]])).item() == pytest.approx((a + b) / 2)
    assert cgl_loss(logits, mask, torch.tensor([[[1.0, 0.5]]])).item() == pytest.approx(a)
    assert cgl_loss(logits, mask, torch.tensor([[[0.5, 0.95]]])).item() == pytest.approx(b)  # >= threshold counts
    assert cgl_loss(logits, mask, torch.tensor([[[0.5, 0.95]]]), threshold=0.96).item() == 0.0


def test_cgl_ignores_low_confidence_pixels():
    logits, mask, conf = _data()
    low = conf < 0.95
    assert 0 < low.sum() < low.numel()
    base = cgl_loss(logits, mask, conf)
    other_logits = torch.where(low[:, None], torch.randn_like(logits) * 10, logits)
    other_mask = torch.where(low, (mask + 1) % 4, mask)
    torch.testing.assert_close(cgl_loss(other_logits, other_mask, conf), base)


def test_cgl_gradient_zero_exactly_where_not_confident():
    logits, mask, conf = _data(seed=1)
    cgl_loss(logits, mask, conf).backward()
    grad = logits.grad.abs().sum(1)
    counted = (conf >= 0.95) & (mask != IGNORE_INDEX)
    assert counted.any()
    assert torch.all(grad[~counted] == 0)
    assert torch.all(grad[counted] > 0)


def test_cgl_with_full_confidence_is_cross_entropy():
    logits, mask, _ = _data(seed=2)
    expected = F.cross_entropy(logits, mask, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(cgl_loss(logits, mask, torch.ones(mask.shape)), expected)


def test_ce_is_cross_entropy_with_ignore():
    logits, mask, _ = _data(seed=3)
    torch.testing.assert_close(ce_loss(logits, mask), F.cross_entropy(logits, mask, ignore_index=IGNORE_INDEX))
    torch.testing.assert_close(ce_loss(logits, mask.to(torch.uint8)), ce_loss(logits, mask))


@pytest.mark.parametrize("case", ["low-confidence", "all-255"])
def test_all_ignored_gives_connected_zero(case):
    logits, mask, conf = _data(seed=4)
    if case == "low-confidence":
        loss = cgl_loss(logits, mask, torch.zeros(mask.shape))
    else:
        loss = ce_loss(logits, torch.full_like(mask, IGNORE_INDEX))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.all(logits.grad == 0) and not torch.isnan(logits.grad).any()


def test_low_resolution_logits_are_upsampled_bilinearly():
    logits, _, _ = _data(seed=5, h=4, w=4)
    mask = torch.randint(0, 4, (2, 16, 16), generator=torch.Generator().manual_seed(5))
    conf = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(6))
    up = F.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(cgl_loss(logits, mask, conf), cgl_loss(up, mask, conf))
    torch.testing.assert_close(ce_loss(logits, mask), F.cross_entropy(up, mask))


def test_confidence_shape_must_match_mask():
    logits, mask, _ = _data()
    with pytest.raises(ValueError, match="differ in shape"):
        cgl_loss(logits, mask, torch.ones(2, 3, 3))


def test_make_loss():
    logits, mask, conf = _data(seed=7)
    assert sorted(LOSSES) == ["ce", "cgl"]
    torch.testing.assert_close(make_loss("ce")(logits, mask, conf), ce_loss(logits, mask))
    torch.testing.assert_close(make_loss("cgl")(logits, mask, conf), cgl_loss(logits, mask, conf))
    torch.testing.assert_close(make_loss("cgl", 0.5)(logits, mask, conf), cgl_loss(logits, mask, conf, 0.5))
    with pytest.raises(ValueError, match=r"unknown --loss 'x'; choose from \['cgl', 'ce'\]"):
        make_loss("x")
    with pytest.raises(ValueError, match="cgl-threshold"):
        make_loss("cgl", 1.5)
