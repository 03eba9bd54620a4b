import numpy as np
import torch

from wsss_ray.toyworld.world import render
from wsss_ray.train.losses import cgl_loss
from wsss_ray.train.model import build_model
from batches import to_batch


def test_tiny_model_overfits_four_toy_images_with_cgl():
    torch.manual_seed(0)
    rows = []
    for seed in range(4):
        sample = render(seed, 64)
        conf = np.full((64, 64), 255, np.uint8)
        conf[:8] = 100  # a low-confidence band CGL must skip
        rows.append((sample.image, sample.mask, conf))
    images, masks, conf = to_batch(rows)
    model = build_model(9, "tiny").train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = cgl_loss(model(images), masks, conf)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses


def test_frozen_clip_segmenter_fits_eight_toy_images():
    """The decoder alone, over frozen toyclip features, learns exact masks of the images it sees."""
    from wsss_ray.metrics import accumulate, scores
    from wsss_ray.train.losses import ce_loss

    torch.manual_seed(0)
    rows = [(s.image, s.mask, None) for s in (render(seed, 64) for seed in range(8))]
    images, masks, _ = to_batch(rows)
    model = build_model(9, "clip", options={"model": "toyclip"}).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(50):
        loss = ce_loss(model(images), masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        predicted = model.eval()(images).argmax(1)
    miou = scores(accumulate(zip(masks.numpy(), predicted.numpy()), 9)).miou
    assert miou > 0.6, miou  # an untrained decoder scores about 0.05
