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
