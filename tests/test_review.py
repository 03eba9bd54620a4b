"""Review formats and the way back: Label Studio's RLE and tasks, COCO, FiftyOne's layout, the
import of corrected masks and what training and export do with them (no Ray, no review tools;
tests/test_review_tools.py checks the same files with the tools' own readers)."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from wsss_ray.export import export, main as export_main
from wsss_ray.labelstudio import annotation_masks, decode_rle, encode_rle, labeling_config
from wsss_ray.masks import decode_png, encode_png
from wsss_ray.store import OUTPUT_SCHEMA, iter_output, parquet_files, read_output
from wsss_ray.review import import_labelstudio, main as review_main
from wsss_ray.store.reviewed import REVIEWED_DIR, reviewed_masks, write_reviews
from wsss_ray.testing.outputs import toy_output
from wsss_ray.toyworld import CLASSES



def test_the_brush_rle_matches_label_studios_own_encoder_on_a_known_mask():
    mask = np.array([[0, 255, 255], [0, 0, 255]], np.uint8)
    # label_studio_sdk.converter.brush.mask2rle of this mask (label-studio-sdk 2.1.2)
    assert encode_rle(mask) == [0, 0, 0, 24, 57, 27, 252, 96, 19, 255, 206, 1, 31, 248]
    assert decode_rle([0, 0, 0, 24, 57, 27, 252, 96, 19, 255, 206, 1, 31, 248], 2, 3).tolist() == (mask > 0).tolist()


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (64, 64), (300, 300), (375, 500)])
def test_the_brush_rle_round_trips_masks_of_every_run_length(shape, rng):
    mask = rng.random(shape) > 0.5
    mask[: shape[0] // 2] = True  # runs longer than 2**16 values at (300, 300) and (375, 500)
    assert np.array_equal(decode_rle(encode_rle(mask), *shape), mask)
    with pytest.raises(ValueError, match="not the"):
        decode_rle(encode_rle(mask), shape[0] + 1, shape[1])


def test_the_labelling_config_is_xml_with_a_brush_per_class_in_the_pngs_colours():
    from wsss_ray.masks import voc_palette

    root = ET.fromstring(labeling_config(CLASSES, voc_palette()))
    brush = root.find("BrushLabels")
    assert root.find("Image").get("value") == "$image" and brush.get("toName") == "image"
    assert [(l.get("value"), l.get("background")) for l in brush] [:2] == [("boat", "#800000"), ("plane", "#008000")]
    assert len(brush) == 8


def _output(tmp_path, masks: dict, status: dict | None = None, quality: dict | None = None):
    return toy_output(tmp_path / "out", masks, status, quality)


def _masks():
    a = np.zeros((6, 8), np.uint8)
    a[1:4, 2:6] = 4  # cow
    a[5, :] = 8      # sheep
    b = np.zeros((5, 4), np.uint8)
    b[:, :2] = 2     # plane
    return {"a": a, "b": b}


def _painted(results, shape) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    for r in results:
        out[decode_rle(r["value"]["rle"], r["original_height"], r["original_width"])] = \
            CLASSES.index(r["value"]["brushlabels"][0]) + 1
    return out


def test_label_studio_tasks_hold_each_class_as_a_brush_scored_by_quality(tmp_path):
    masks = _masks()
    out = _output(tmp_path, masks, quality={"a": 0.9, "b": 0.1})
    summary = export(str(out), "labelstudio", str(tmp_path / "ls"), document_root=str(tmp_path))
    assert summary["written"] == 2
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    by_id = {t["data"]["id"]: t for t in tasks}
    assert by_id["a"]["data"]["image"] == "/data/local-files/?d=images/a.png"
    prediction = by_id["a"]["predictions"][0]
    assert prediction["score"] == pytest.approx(0.9) and prediction["model_version"] == "run-1"
    assert [r["value"]["brushlabels"] for r in prediction["result"]] == [["cow"], ["sheep"]]
    for row_id, mask in masks.items():
        assert np.array_equal(_painted(by_id[row_id]["predictions"][0]["result"], mask.shape), mask)
    ET.fromstring((tmp_path / "ls" / "labeling_config.xml").read_text())
    with pytest.raises(ValueError, match="outside --document-root"):
        export(str(out), "labelstudio", str(tmp_path / "ls2"), document_root=str(tmp_path / "elsewhere"))


def test_min_confidence_leaves_the_unconfident_pixels_unpainted(tmp_path):
    mask = np.full((2, 2), 4, np.uint8)
    out = tmp_path / "out"
    out.mkdir()
    confidence = np.array([[255, 100], [255, 255]], np.uint8)
    row = {"id": "x", "image": "s3://bucket/x.jpg", "labels": ["cow"], "width": 2, "height": 2,
           "mask": encode_png(mask), "confidence": encode_png(confidence, palette=False), "status": "ok",
           "error": None, "labelset": "toyworld", "model": "m", "method": "clip-es", "run_id": "r",
           "quality": 0.4, "label_quality": [0.4]}
    pq.write_table(pa.Table.from_pylist([row], schema=OUTPUT_SCHEMA), out / "part-0.parquet")
    export(str(out), "labelstudio", str(tmp_path / "ls"), min_confidence=0.95)
    task = json.loads((tmp_path / "ls" / "tasks.json").read_text())[0]
    assert task["data"]["image"] == "s3://bucket/x.jpg"  # served by the project's S3 storage
    assert _painted(task["predictions"][0]["result"], (2, 2)).tolist() == [[4, 0], [4, 4]]


def test_coco_has_one_rle_per_image_and_class_that_pycocotools_decodes_to_the_mask(tmp_path):
    from pycocotools.coco import COCO

    masks = _masks()
    out = _output(tmp_path, masks, status={"c": "error"})
    summary = export(str(out), "coco", str(tmp_path / "coco.json"))
    assert (summary["images"], summary["annotations"]) == (2, 3)
    coco = COCO(str(tmp_path / "coco.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    for image in coco.dataset["images"]:
        mask = masks[image["row_id"]]
        assert image["file_name"].endswith(f"images/{image['row_id']}.png")
        painted = np.zeros_like(mask)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
            painted[coco.annToMask(ann) > 0] = ann["category_id"]
            assert ann["area"] == (mask == ann["category_id"]).sum()
        assert np.array_equal(painted, mask)
    scores = {(a["image_id"], a["category_id"]): a["score"] for a in coco.dataset["annotations"]}
    assert scores[(1, 4)] == 0.25 and scores[(1, 8)] == 0.75  # each label's label_quality
    with pytest.raises(ValueError, match=".json"):
        export(str(out), "coco", str(tmp_path / "coco"))


def test_the_fiftyone_layout_names_masks_heatmaps_and_the_ground_truth(tmp_path):
    masks = _masks()
    out = _output(tmp_path, masks)
    truth = tmp_path / "manifest.jsonl"
    Image.fromarray(masks["a"]).save(tmp_path / "a-truth.png")
    truth.write_text(json.dumps({"id": "a", "image": "images/a.png", "labels": ["cow"], "mask": "a-truth.png"}) + "\n")
    summary = export(str(out), "fiftyone", str(tmp_path / "fo"), truth=str(truth))
    assert (summary["written"], summary["ground_truth"]) == (2, 1)
    samples = json.loads((tmp_path / "fo" / "samples.json").read_text())["samples"]
    meta = json.loads((tmp_path / "fo" / "metadata.json").read_text())
    assert meta["info"]["default_mask_targets"]["4"] == "cow" and "ground_truth" in meta["sample_fields"]
    for s in samples:
        stored = np.array(Image.open(s["pseudo_mask"]["mask_path"]))
        assert Image.open(s["pseudo_mask"]["mask_path"]).mode == "L"  # FiftyOne reads a palette PNG as colours
        assert np.array_equal(stored, masks[s["row_id"]]) and s["quality"] == 0.5
    assert samples[0]["ground_truth"]["mask_path"] == str(tmp_path / "a-truth.png")


def _ls_export(tasks: list[tuple]) -> list[dict]:
    """A Label Studio JSON export: (task id, row id, [(annotation id, mask, updated_at, cancelled)])."""
    out = []
    for task_id, row_id, annotations in tasks:
        anns = []
        for ann_id, mask, updated, cancelled in annotations:
            result = [{"type": "brushlabels", "from_name": "label", "to_name": "image", "original_width": mask.shape[1],
                       "original_height": mask.shape[0],
                       "value": {"format": "rle", "rle": encode_rle(mask == v), "brushlabels": [CLASSES[v - 1]]}}
                      for v in np.unique(mask) if v]
            anns.append({"id": ann_id, "completed_by": 1, "updated_at": updated, "was_cancelled": cancelled,
                         "result": result})
        out.append({"id": task_id, "data": {"image": "/data/local-files/?d=x.png", "id": row_id},
                    "annotations": anns, "predictions": []})
    return out


def test_the_latest_annotation_of_each_task_is_its_mask_and_cancelled_ones_are_passed_over():
    first, second = np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8)
    first[0] = 4
    second[:, 0] = 2
    second[2, 2] = 4  # two classes, painted in order
    tasks = _ls_export([(7, "a", [(1, first, "2026-12-01T10:00:00Z", False), (2, second, "2026-12-02T10:00:00Z", False),
                                  (3, first, "2026-12-03T10:00:00Z", True)]),
                        (8, "b", [(4, first, "2026-12-01T10:00:00Z", True)])])
    got = list(annotation_masks(tasks, CLASSES))
    assert [g["id"] for g in got] == ["a"] and np.array_equal(got[0]["mask"], second)
    assert (got[0]["reviewer"], got[0]["reviewed_at"], got[0]["task"], got[0]["annotation"]) == \
        ("user 1", "2026-12-02T10:00:00Z", 7, 2)
    tasks[0]["annotations"][1]["result"][0]["value"]["brushlabels"] = ["unicorn"]
    with pytest.raises(ValueError, match="'unicorn', which is not a class"):
        list(annotation_masks(tasks, CLASSES))


def test_importing_reviews_stores_them_beside_the_output_once_and_export_and_training_use_them(tmp_path, capsys):
    from wsss_ray.train.trainer import augment_stage

    masks = _masks()
    out = _output(tmp_path, {**masks, "c": np.zeros((4, 4), np.uint8)}, status={"c": "error"})
    fixed_a = np.zeros_like(masks["a"])
    fixed_a[:3, :3] = 5
    fixed_c = np.full((4, 4), 3, np.uint8)
    export_file = tmp_path / "export.json"
    export_file.write_text(json.dumps(_ls_export([
        (1, "a", [(10, fixed_a, "2026-12-02T10:00:00Z", False)]),
        (2, "c", [(11, fixed_c, "2026-12-02T11:00:00Z", False)]),      # an error row a person labelled
        (3, "zzz", [(12, fixed_c, "2026-12-02T11:00:00Z", False)])])))  # not a row of this output
    before = sorted(p.name for p in out.iterdir())
    assert review_main(["import", str(export_file), "--output", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["reviewed"], summary["unknown_ids"], summary["new"]) == (2, 1, True)
    again = import_labelstudio(str(export_file), str(out))
    assert again["file"] == summary["file"] and again["new"] is False  # idempotent
    assert len(list((out / REVIEWED_DIR).iterdir())) == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(before + [REVIEWED_DIR])
    assert [p.rsplit("/", 1)[1] for p in parquet_files(str(out))[1]] == ["part-0.parquet"]  # not rows of the job

    stored = reviewed_masks(str(out), ("mask", "reviewer", "reviewed_at", "source"))
    assert np.array_equal(decode_png(stored["a"]["mask"]), fixed_a)
    assert stored["a"]["reviewer"] == "user 1" and stored["a"]["source"] == f"{export_file}#task=1,annotation=10"

    # export writes the reviewed mask (and the reviewed error row); the others stay pseudo-masks
    export(str(out), "png", str(tmp_path / "png"))
    assert np.array_equal(np.array(Image.open(tmp_path / "png" / "a.png")), fixed_a)
    assert np.array_equal(np.array(Image.open(tmp_path / "png" / "c.png")), fixed_c)
    assert np.array_equal(np.array(Image.open(tmp_path / "png" / "b.png")), masks["b"])
    export(str(out), "labelstudio", str(tmp_path / "ls"), document_root=str(tmp_path))
    tasks = {t["data"]["id"]: t for t in json.loads((tmp_path / "ls" / "tasks.json").read_text())}
    assert "annotations" in tasks["a"] and "predictions" not in tasks["a"] and "predictions" in tasks["b"]

    # training takes the reviewed mask, every pixel trusted
    batch = {"id": np.array(["a", "b"]), "image": np.array([str(tmp_path / "images" / f"{i}.png") for i in "ab"]),
             "mask": np.array([encode_png(masks["a"]), encode_png(masks["b"])], object),
             "confidence": np.array([encode_png(np.full((6, 8), 10, np.uint8), palette=False),
                                     encode_png(np.full((5, 4), 10, np.uint8), palette=False)], object)}
    reviewed = {"a": stored["a"]["mask"]}
    crops = augment_stage(batch, crop=16, scales=(1.0,), reviewed=reviewed)
    first = crops["mask"][0]
    assert set(np.unique(first)) <= {0, 5, 255} and (first == 5).any()  # fixed_a's class, not the cow
    assert (crops["confidence"][0][first != 255] == 255).all() and (crops["confidence"][1][crops["mask"][1] != 255] == 10).all()


def test_a_later_review_of_an_id_wins_and_a_wrong_size_is_one_sentence(tmp_path):
    out = _output(tmp_path, _masks())
    one, two = np.zeros((6, 8), np.uint8), np.ones((6, 8), np.uint8)
    base = {"id": "a", "width": 8, "height": 6, "reviewer": "x", "source": "s"}
    write_reviews(str(out), [{**base, "mask": two, "reviewed_at": "2026-12-02"}])
    write_reviews(str(out), [{**base, "mask": one, "reviewed_at": "2026-12-01"}])
    assert np.array_equal(decode_png(reviewed_masks(str(out))["a"]["mask"]), two)
    export_file = tmp_path / "export.json"
    export_file.write_text(json.dumps(_ls_export([(1, "a", [(10, np.zeros((2, 2), np.uint8) + 4, "t", False)])])))
    with pytest.raises(ValueError, match="is 2x2 but its image is 8x6"):
        import_labelstudio(str(export_file), str(out))
    export_file.write_text("{not json")
    with pytest.raises(SystemExit):
        review_main(["import", str(export_file), "--output", str(out)])


def test_outputs_written_before_the_quality_columns_read_them_as_null(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    old_schema = pa.schema([f for f in OUTPUT_SCHEMA if f.name not in ("quality", "label_quality")])
    old = {"id": "old", "image": "x.png", "labels": ["cow"], "width": 2, "height": 2,
           "mask": encode_png(np.zeros((2, 2), np.uint8)), "confidence": encode_png(np.zeros((2, 2), np.uint8), False),
           "status": "ok", "error": None, "labelset": "toyworld", "model": "m", "method": "clip-es", "run_id": "r"}
    pq.write_table(pa.Table.from_pylist([old], schema=old_schema), out / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist([{**old, "id": "new", "quality": 0.5, "label_quality": [0.5]}],
                                        schema=OUTPUT_SCHEMA), out / "part-1.parquet")
    rows = [r for b in iter_output(str(out), ["id", "quality", "label_quality"]) for r in b.to_pylist()]
    assert rows == [{"id": "old", "quality": None, "label_quality": None},
                    {"id": "new", "quality": 0.5, "label_quality": [0.5]}]
    assert read_output(str(out), ["id", "quality"]).to_pylist() == [{"id": "old", "quality": None},
                                                                   {"id": "new", "quality": 0.5}]
    assert export_main([str(out), "--format", "coco", "--to", str(tmp_path / "c.json")]) == 0
