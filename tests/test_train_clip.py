import json

import pytest
import torch

from wsss_ray.clip import load_clip
from wsss_ray.toyworld.train_clip import TrainClipConfig, positives, soft_clip_loss, train_clip
from wsss_ray.toyworld.world import render


def test_positives_follow_caption_truth():
    a, b = render(0), render(1)  # different label sets
    pos = positives([a, b], [frozenset(a.labels), frozenset()], [None, b.stuff[0]])
    assert pos[0, 0] and not pos[1, 0]            # a's labels are not all in b
    assert pos[1, 1]                              # a stuff-only caption is true of its image
    assert pos[0, 1] == (b.stuff[0] in a.stuff)   # ... and of every image with that stuff


def test_soft_loss_is_lower_for_aligned_embeddings():
    eye = torch.eye(4)
    pos = torch.eye(4, dtype=torch.bool)
    aligned = soft_clip_loss(eye, eye, torch.tensor(10.0), pos)
    shuffled = soft_clip_loss(eye, eye.roll(1, 0), torch.tensor(10.0), pos)
    assert aligned < shuffled


@pytest.mark.slow
def test_train_clip_checkpoints_and_resumes(tmp_path):
    cfg = TrainClipConfig(steps=4, n_train=64, batch_size=16, save_every=2, eval_images=16, warmup=1)
    train_clip(tmp_path, cfg, log=lambda *_: None)
    history = [json.loads(l) for l in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [2, 4]
    assert (tmp_path / "step_00002" / "open_clip_model.safetensors").is_file()
    load_clip(f"local-dir:{tmp_path}")  # the final folder is a loadable local-dir model
    cfg.steps = 6
    train_clip(tmp_path, cfg, log=lambda *_: None)
    steps = [json.loads(l)["step"] for l in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]  # resumed at 4, not restarted from 0
