"""Round trips through the review tools' own code, pixel for pixel: Label Studio's RLE decoder
and encoder (label_studio_sdk), FiftyOne's dataset loader, and a real Label Studio server on
loopback: project, tasks with predictions, a correction, its export, the import, training.

The tools live in their own environment (``make review-tools``; ``make test`` makes it).
"""

import json
import os

import numpy as np
import pytest

from wsss_ray.export import export
from wsss_ray.labelstudio import encode_rle
from wsss_ray.testing.outputs import toy_output
from wsss_ray.testing.review_tools import label_studio_server, review_python, run_in_tools
from wsss_ray.toyworld import CLASSES


@pytest.fixture(scope="module", autouse=True)
def tools():
    if review_python() is None:
        if os.environ.get("CI"):
            pytest.fail("the review tools are not installed; `make test` installs them with `make review-tools`")
        pytest.skip("the review tools are not installed; run `make review-tools`")


def _masks(rng) -> dict[str, np.ndarray]:
    out = {}
    for i, (h, w) in enumerate([(6, 8), (37, 50), (120, 90)]):
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4: 3 * h // 4, w // 5: w // 2] = 4
        mask[rng.random((h, w)) > 0.9] = 1 + i  # ragged edges: runs of every length
        out[f"img-{i}"] = mask
    return out


def test_label_studios_own_decoder_reads_the_exported_tasks_and_its_encoder_writes_what_ours_does(tmp_path, rng):
    masks = _masks(rng)
    out = toy_output(tmp_path / "out", masks)
    export(str(out), "labelstudio", str(tmp_path / "ls"), document_root=str(tmp_path))
    np.savez(tmp_path / "masks.npz", **masks)
    checked = run_in_tools('''
import json, sys, numpy as np
from label_studio_sdk.converter.brush import decode_rle, mask2rle
tasks = json.load(open(sys.argv[1])); masks = np.load(sys.argv[2]); classes = sys.argv[3].split(",")
for t in tasks:
    mask = masks[t["data"]["id"]]
    painted = np.zeros_like(mask)
    for r in t["predictions"][0]["result"]:
        alpha = decode_rle(r["value"]["rle"]).reshape(r["original_height"], r["original_width"], 4)[:, :, 3]
        painted[alpha > 0] = classes.index(r["value"]["brushlabels"][0]) + 1
    assert np.array_equal(painted, mask), t["data"]["id"]
print(json.dumps({"tasks": len(tasks), "sdk_rle": {k: mask2rle((masks[k] == 4).astype(np.uint8) * 255) for k in masks}}))
''', str(tmp_path / "ls" / "tasks.json"), str(tmp_path / "masks.npz"), ",".join(CLASSES))
    result = json.loads(checked)
    assert result["tasks"] == 3
    for row_id, rle in result["sdk_rle"].items():
        assert rle == encode_rle(masks[row_id] == 4)  # byte for byte what Label Studio's encoder writes


def test_fiftyones_loader_reads_masks_heatmaps_ground_truth_and_sorts_by_quality(tmp_path, rng):
    from PIL import Image

    masks = _masks(rng)
    out = toy_output(tmp_path / "out", masks, quality={"img-0": 0.7, "img-1": 0.2, "img-2": 0.9})
    manifest = tmp_path / "manifest.jsonl"
    with manifest.open("w") as f:
        for row_id, mask in masks.items():
            Image.fromarray(mask).save(tmp_path / f"{row_id}-truth.png")
            f.write(json.dumps({"id": row_id, "image": f"images/{row_id}.png", "labels": ["cow"],
                                "mask": f"{row_id}-truth.png"}) + "\n")
    export(str(out), "fiftyone", str(tmp_path / "fo"), truth=str(manifest))
    np.savez(tmp_path / "masks.npz", **masks)
    loaded = run_in_tools('''
import json, sys, numpy as np, fiftyone as fo
dataset = fo.Dataset.from_dir(sys.argv[1], dataset_type=fo.types.LegacyFiftyOneDataset, name="wsss-test", overwrite=True)
masks = np.load(sys.argv[2])
for s in dataset:
    assert np.array_equal(s.pseudo_mask.get_mask(), masks[s.row_id]), s.row_id
    assert np.array_equal(s.ground_truth.get_mask(), masks[s.row_id]), s.row_id
    assert s.confidence.get_map().max() == 250 and tuple(s.confidence.range) == (0, 255)
print(json.dumps({"order": [s.row_id for s in dataset.sort_by("quality")], "targets": dataset.default_mask_targets,
                  "fields": sorted(dataset.get_field_schema())}))
''', str(tmp_path / "fo"), str(tmp_path / "masks.npz"), cwd=tmp_path)
    result = json.loads(loaded.strip().splitlines()[-1])
    assert result["order"] == ["img-1", "img-0", "img-2"]  # the review queue: worst first
    assert result["targets"]["4"] == "cow" and result["targets"]["255"] == "ignore"
    assert {"pseudo_mask", "ground_truth", "confidence", "quality", "label_quality", "row_id"} <= set(result["fields"])


@pytest.mark.slow
def test_a_correction_made_in_a_real_label_studio_comes_back_and_training_reads_it(tmp_path, ray_local):
    from wsss_ray.config import TrainConfig
    from wsss_ray.review import import_labelstudio
    from wsss_ray.train.trainer import reviewed_training_masks, train_dataset

    a = np.zeros((24, 32), np.uint8)
    a[4:16, 8:24] = 4                      # a cow, which the reviewer repaints as a bird
    b = np.zeros((24, 32), np.uint8)
    b[:, :10] = 2
    out = toy_output(tmp_path / "out", {"a": a, "b": b}, quality={"a": 0.1, "b": 0.8})
    export(str(out), "labelstudio", str(tmp_path / "ls"), document_root=str(tmp_path))
    with label_studio_server(tmp_path / "label-studio", tmp_path) as studio:
        project = studio.call("POST", "/api/projects", json={
            "title": "wsss-ray review", "label_config": (tmp_path / "ls" / "labeling_config.xml").read_text()})
        studio.call("POST", "/api/storages/localfiles", json={"project": project["id"], "title": "images",
                                                              "path": str(tmp_path / "images"), "use_blob_urls": False})
        imported = studio.call("POST", f"/api/projects/{project['id']}/import",
                               json=json.loads((tmp_path / "ls" / "tasks.json").read_text()))
        assert (imported["task_count"], imported["prediction_count"]) == (2, 2)
        tasks = studio.call("GET", "/api/tasks", params={"project": project["id"], "fields": "all"})["tasks"]
        scores = {t["data"]["id"]: t["predictions"][0]["score"] for t in tasks}
        assert scores == pytest.approx({"a": 0.1, "b": 0.8})
        image = studio.session.get(studio.url + "/data/local-files/", params={"d": "images/a.png"}, timeout=60)
        assert image.ok and image.headers["content-type"] == "image/png"  # the task's image is served

        bird = np.zeros_like(a)
        bird[2:20, 4:28] = 5
        task_a = next(t for t in tasks if t["data"]["id"] == "a")
        studio.call("POST", f"/api/tasks/{task_a['id']}/annotations", json={"result": [{
            "from_name": "label", "to_name": "image", "type": "brushlabels", "original_width": 32,
            "original_height": 24, "value": {"format": "rle", "rle": encode_rle(bird == 5), "brushlabels": ["bird"]}}]})
        exported = studio.session.get(studio.url + f"/api/projects/{project['id']}/export",
                                      params={"exportType": "JSON"}, timeout=120)
        exported.raise_for_status()
        (tmp_path / "export.json").write_bytes(exported.content)

    summary = import_labelstudio(str(tmp_path / "export.json"), str(out))
    assert (summary["reviewed"], summary["new"]) == (1, True)
    config = TrainConfig(input=str(out), crop=40, aug_scales=(1.0,), batch_size=2)
    reviewed = reviewed_training_masks(config)
    assert list(reviewed) == ["a"]
    crops = train_dataset(config, reviewed=reviewed).take_all()
    values = [set(np.unique(c["mask"])) - {0, 255} for c in crops]
    assert sorted(map(sorted, values)) == [[2], [5]]  # the bird replaced the cow; the other row kept its plane
    corrected = next(c for c in crops if 5 in c["mask"])
    assert (corrected["confidence"][corrected["mask"] != 255] == 255).all()
