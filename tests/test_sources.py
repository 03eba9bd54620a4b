import io
import json

import numpy as np
import pytest
from PIL import Image

from wsss_ray.store.sources import (
    decode_image, load_image, load_mask, read_coco, read_manifest, read_source, read_voc, unlabelled_folder,
)


def _png(path, shape=(6, 8, 3), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros(shape, np.uint8), mode=mode).save(path)


def test_read_manifest_resolves_relative_paths(tmp_path):
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"id": "a", "image": "img/a.png", "labels": ["cow"], "mask": "masks/a.png"}) + "\n\n"
        + json.dumps({"id": "b", "image": "/abs/b.png", "labels": []}) + "\n")
    items = read_manifest(tmp_path / "m.jsonl")
    assert [i.id for i in items] == ["a", "b"]
    assert items[0].image == str(tmp_path / "img/a.png") and items[0].mask == str(tmp_path / "masks/a.png")
    assert items[1].image == "/abs/b.png" and items[1].mask is None and items[1].labels == ()


def test_malformed_manifest_line_is_named(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"id": "a", "image": "a.png", "labels": []}\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl:2"):
        read_manifest(tmp_path / "m.jsonl")
    (tmp_path / "n.jsonl").write_text('{"id": "a", "image": "a.png", "labels": "cow"}\n')
    with pytest.raises(ValueError, match=r"n\.jsonl:1"):
        read_manifest(tmp_path / "n.jsonl")


def test_manifest_through_a_file_uri(tmp_path):
    """URIs go through pyarrow filesystems; relative paths resolve against the manifest's URI."""
    _png(tmp_path / "img" / "a.png")
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "image": "img/a.png", "labels": ["cow"]}) + "\n")
    items = read_source(f"file://{tmp_path}/m.jsonl")
    assert items[0].image == f"file://{tmp_path}/img/a.png"
    assert load_image(items[0].image).shape == (6, 8, 3)


def test_folder_with_labels_csv_and_jsonl(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "sub" / "b.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "labels.csv").write_text('image,labels\na.png,cow;sheep\nsub/b.jpg,"potted plant"\n')
    items = {i.id: i for i in read_source(str(tmp_path))}
    assert set(items) == {"a", "sub/b"}
    assert items["a"].labels == ("cow", "sheep") and items["sub/b"].labels == ("potted plant",)
    (tmp_path / "labels.csv").unlink()
    (tmp_path / "labels.jsonl").write_text(json.dumps({"image": "a.png", "labels": ["boat"]}) + "\n")
    items = {i.id: i for i in read_source(str(tmp_path))}
    assert items["a"].labels == ("boat",) and items["sub/b"].labels is None  # not listed: not known


def test_a_folder_without_labels_file_has_items_whose_labels_are_not_known(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    assert [(i.id, i.labels) for i in read_source(str(tmp_path))] == [("a", None), ("b", None)]
    assert unlabelled_folder(str(tmp_path))
    (tmp_path / "labels.csv").write_text("image,labels\na.png,cow\n")
    assert not unlabelled_folder(str(tmp_path))


def test_manifest_labels_absent_or_null_are_not_known_and_an_empty_list_is_nothing_in_it(tmp_path):
    lines = [{"id": "a", "image": "a.png"}, {"id": "b", "image": "b.png", "labels": None},
             {"id": "c", "image": "c.png", "labels": []}, {"id": "d", "image": "d.png", "labels": ["cow"]}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert [i.labels for i in read_source(str(tmp_path / "m.jsonl"))] == [None, None, (), ("cow",)]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": "e", "image": "e.png", "labels": "cow"}) + "\n")
    with pytest.raises(ValueError, match="labels must be a list or null"):
        read_source(str(tmp_path / "bad.jsonl"))


def _voc(root):
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000001\n2007_000002\n")
    (root / "Annotations").mkdir()
    for vid, names in (("2007_000001", ["person", "dog", "person"]), ("2007_000002", ["cat"])):
        objs = "".join(f"<object><name>{n}</name></object>" for n in names)
        (root / "Annotations" / f"{vid}.xml").write_text(f"<annotation>{objs}</annotation>")
    _png(root / "SegmentationClass" / "2007_000001.png", (6, 8), "L")


def test_voc_split_labels_and_masks(tmp_path):
    _voc(tmp_path)
    items = read_source(f"voc:{tmp_path}:val")
    assert [i.id for i in items] == ["2007_000001", "2007_000002"]
    assert items[0].labels == ("person", "dog")              # unique, in annotation order
    assert items[0].image == str(tmp_path / "JPEGImages" / "2007_000001.jpg")
    assert items[0].mask == str(tmp_path / "SegmentationClass" / "2007_000001.png")
    assert items[1].mask is None                             # no ground truth for that id
    with pytest.raises(ValueError, match="ImageSets"):
        read_voc(str(tmp_path), "train")                     # default split, absent here
    assert read_source(f"voc:file://{tmp_path}:val")[1].labels == ("cat",)


def test_coco_categories_become_labelset_names(tmp_path):
    ann = {"images": [{"id": 7, "file_name": "train2014/x.jpg"}, {"id": 8, "file_name": "train2014/y.jpg"}],
           "categories": [{"id": 5, "name": "airplane"}, {"id": 64, "name": "potted plant"}, {"id": 1, "name": "person"}],
           "annotations": [{"image_id": 7, "category_id": 5}, {"image_id": 7, "category_id": 1},
                           {"image_id": 7, "category_id": 5}, {"image_id": 8, "category_id": 64}]}
    (tmp_path / "instances.json").write_text(json.dumps(ann))
    items = read_source(f"coco:{tmp_path}:{tmp_path}/instances.json")
    assert [(i.id, i.labels) for i in items] == [("7", ("aeroplane", "person")), ("8", ("pottedplant",))]
    assert items[0].image == str(tmp_path / "train2014" / "x.jpg")
    with pytest.raises(ValueError, match="coco:ROOT:ANNOTATIONS.json"):
        read_source(f"coco:{tmp_path}")
    assert read_coco(str(tmp_path), str(tmp_path / "instances.json")) == items


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not a manifest"):
        read_source(str(tmp_path / "missing"))


def test_decode_applies_exif_orientation_and_converts_modes():
    img = Image.fromarray(np.zeros((10, 20), np.uint8), mode="L")
    exif = img.getexif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    out = decode_image(buf.getvalue())
    assert out.shape == (20, 10, 3) and out.dtype == np.uint8
    rgba = io.BytesIO()
    Image.fromarray(np.full((4, 4, 4), 200, np.uint8), mode="RGBA").save(rgba, format="PNG")
    assert decode_image(rgba.getvalue()).shape == (4, 4, 3)


def test_pixel_cap_refuses_before_decoding():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(buf, format="PNG")
    with pytest.raises(ValueError, match="pixels"):
        decode_image(buf.getvalue(), max_pixels=9_999)


def test_load_mask_returns_palette_indices(tmp_path):
    m = Image.fromarray(np.array([[0, 3], [255, 1]], np.uint8), mode="L").convert("P")
    m.putpalette([7] * 768)
    m.save(tmp_path / "m.png")
    assert load_mask(str(tmp_path / "m.png")).tolist() == [[0, 3], [255, 1]]


def test_relative_manifest_gives_absolute_paths(tmp_path, monkeypatch):
    """Items reach Ray workers (Ray Train's run in another working directory), so local paths are absolute."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "col").mkdir()
    (tmp_path / "col" / "m.jsonl").write_text('{"id": "a", "image": "img/a.png", "labels": [], "mask": "m/a.png"}\n')
    item = read_source("col/m.jsonl")[0]
    assert item.image == str(tmp_path / "col" / "img" / "a.png") and item.mask == str(tmp_path / "col" / "m" / "a.png")
