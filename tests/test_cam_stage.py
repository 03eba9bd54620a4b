"""The CAM stage and the CRF stage of the labelling graph, called directly (no Ray cluster)."""

import json
import os

import numpy as np
import pytest

from wsss_ray.config import CrfConfig, LabelJobConfig, PostConfig
from wsss_ray.masks import decode_png
from wsss_ray.pipeline import CamStage, crf_in_actor, crf_stage
from wsss_ray.stages import decode_stage
from wsss_ray.toyworld import generate
from wsss_ray.testing.settings import toy_job


def _batch(manifest):
    items = [json.loads(line) for line in manifest.read_text().splitlines()]
    folder = os.path.dirname(manifest)
    return {"id": np.array([i["id"] for i in items]),
            "image": np.array([os.path.join(folder, i["image"]) for i in items]),
            "labels": [np.array(i["labels"]) for i in items], "status": np.array(["ok"] * len(items), object),
            "error": np.array([None] * len(items), object)}


@pytest.mark.parametrize("device, backend, iters, expected", [
    ("cuda", "torch", 10, True), ("cuda:1", "torch", 10, True), ("cpu", "torch", 10, False),
    ("cuda", "pydensecrf", 10, False), ("cuda", "torch", 0, True), ("cuda", "pydensecrf", 0, True),
    ("cuda", "auto", 10, True), ("cpu", "auto", 10, False), ("cpu", "torch", 0, False)])
def test_the_steps_after_the_cams_run_in_the_actor_only_on_a_gpu_with_the_torch_crf_or_none(device, backend, iters,
                                                                                          expected):
    config = LabelJobConfig(post=PostConfig(crf=CrfConfig(backend=backend, iters=iters)))
    assert crf_in_actor(config, device) is expected


@pytest.mark.parametrize("crf", [{"backend": "torch", "downsample": 1}, {"backend": "torch", "iters": 0}])
def test_the_gpu_layouts_give_the_masks_of_crf_tasks(tmp_path, crf):
    """The GPU layouts (here forced on the CPU) label as the CPU layout does: the CRF in the actor
    (marginals to the CRF tasks), and every step on the actor's device (mask and confidence to
    the CRF tasks, which only encode them)."""
    manifest = generate(tmp_path / "toy", 6, seed=2_000_000)
    config = toy_job(input=str(manifest), output=str(tmp_path / "out"), precision="fp32", post={"crf": crf})
    stage = CamStage(config)
    assert stage.refine is False and stage.labeler.post_on_device is False  # a CPU actor: the CRF in CPU tasks
    masks, scores = {}, {}
    for refine, on_device, kind in ((False, False, "cams"), (True, False, "crf"), (True, True, "mask")):
        stage.refine, stage.labeler.post_on_device = refine, on_device
        batch = stage(decode_stage(_batch(manifest), max_pixels=10**8))
        assert list(batch["probs_kind"]) == [kind] * 6
        table = crf_stage(batch, config, run_id="r").to_pylist()
        assert all(row["status"] == "ok" for row in table)
        masks[kind] = [decode_png(row["mask"]) for row in table]
        scores[kind] = [(row["quality"], row["label_quality"]) for row in table]
    for kind in ("crf", "mask"):
        agree = [(a == b).mean() for a, b in zip(masks["cams"], masks[kind])]
        assert min(agree) > 0.99  # float16 transport of the probabilities, of the marginals, or neither
        for (q_cpu, labels_cpu), (q, labels) in zip(scores["cams"], scores[kind]):  # scored alike
            assert 0 <= q_cpu <= 1 and q == pytest.approx(q_cpu, abs=0.02)
            assert len(labels) == len(labels_cpu) and np.allclose(labels, labels_cpu, atol=0.02)


def test_an_image_the_tagger_fails_on_is_an_error_row_and_the_rest_of_its_batch_is_labelled(tmp_path):
    manifest = generate(tmp_path / "toy", 4, seed=2_000_000)
    stage = CamStage(LabelJobConfig(input=str(manifest), output=str(tmp_path / "out"), labels="auto"))
    batch = decode_stage(_batch(manifest), max_pixels=10**8)
    poison = batch["pixels"][2]
    tags = stage.labeler.tags
    stage.labeler.tags = lambda images: (_ for _ in ()).throw(MemoryError("no room")) if any(
        i is poison for i in images) else tags(images)
    out = stage(batch)
    assert list(out["status"]) == ["ok", "ok", "error", "ok"]
    assert out["error"][2] == "tagging failed: MemoryError: no room"
    assert [out["labels_source"][i] for i in (0, 1, 3)] == ["predicted"] * 3
    expected = tags([out["pixels"][i] for i in (0, 1, 3)])
    assert [len(out["label_scores"][i]) for i in (0, 1, 3)] == [len(out["labels"][i]) for i in (0, 1, 3)]
    assert all(set(out["labels"][i]) <= set(t.labels) for i, t in zip((0, 1, 3), expected))  # the check may drop
