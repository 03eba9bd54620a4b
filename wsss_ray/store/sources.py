"""Readers for labelled image collections, local or remote (pyarrow filesystems).

A SOURCE (the ``--input`` flag) is one of:

- ``PATH.jsonl``: a manifest, one ``{"id", "image", "labels"?, "mask"?}`` object per line
  (DESIGN.md); paths relative to the manifest's folder, absolute, or URIs; ``PATH.parquet``
  holds the same as columns; ``labels`` absent or null means the item's labels are not
  known (the job's ``--labels missing`` has them proposed), ``[]`` that nothing is in it;
- ``DIR`` of manifest shards (``*.jsonl`` / ``*.parquet``, any depth): one manifest in
  many files, each read by its own Ray Data read tasks in a job;
- ``DIR``: otherwise, a folder of images with ``DIR/labels.jsonl`` (``{"image": "a/b.jpg", "labels": [...]}``)
  or ``DIR/labels.csv`` (header ``image,labels``, labels separated by ``;``), or with neither
  (every image's labels unknown); ids are the image paths relative to DIR without
  extension; an image the labels file does not list has unknown labels;
- ``voc:ROOT[:SPLIT]``: the VOC2012 layout, SPLIT from ``ImageSets/Segmentation`` (default
  ``train``), labels from ``Annotations/*.xml``, ground truth from ``SegmentationClass``;
- ``coco:ROOT:ANNOTATIONS.json``: images under ROOT, labels = the categories of an image's
  instances, renamed to the ``coco`` labelset's VOC-style names (airplane -> aeroplane, ...).

Every path may be a URI (``s3://``, ``gs://``, ``file://``...) that pyarrow understands.
Readers return :class:`Item` metadata only; pixels are read later by :func:`read_bytes`
and decoded by :func:`decode_image`.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
from PIL import Image, ImageOps

from wsss_ray.budget import fit_side, shrink
from wsss_ray.store.files import filesystem, is_file, read_bytes

EXIF_ORIENTATION = 0x0112
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Official COCO category names -> the coco labelset's names (CLIP-ES uses VOC-style names).
COCO_RENAMES = {"airplane": "aeroplane", "motorcycle": "motorbike", "couch": "sofa",
                "potted plant": "pottedplant", "dining table": "diningtable", "tv": "tvmonitor"}


@dataclass(frozen=True)
class Item:
    """One image of a collection: id, image path/URI, image-level labels (None: not known), optional GT mask."""

    id: str
    image: str
    labels: tuple[str, ...] | None
    mask: str | None = None


# ------------------------------------------------------------------ filesystem


def _read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def _join(base: str, rel: str) -> str:
    """`rel` against the folder `base` (local path or URI); absolute paths and URIs stay."""
    if "://" in rel or rel.startswith("/"):
        return rel
    # Local paths become absolute: items travel to Ray workers whose working directory differs.
    return posixpath.join(base, rel) if "://" in base else str((Path(base) / rel).absolute())


def _parent(path: str) -> str:
    return posixpath.dirname(path) if "://" in path else str(Path(path).parent)


def _is_dir(path: str) -> bool:
    fs, p = filesystem(path)
    return fs.get_file_info(p).type == pafs.FileType.Directory


def _list_files(folder: str) -> list[str]:
    """Paths of the files under `folder` (recursive), relative to it, sorted."""
    fs, p = filesystem(folder)
    infos = fs.get_file_info(pafs.FileSelector(p, recursive=True))
    return sorted(posixpath.relpath(i.path, p) for i in infos if i.type == pafs.FileType.File)


# ------------------------------------------------------------------ readers


def read_source(spec: str) -> list[Item]:
    """Items of a SOURCE (see the module docstring)."""
    if spec.startswith("voc:"):
        root, sep, split = spec[4:].rpartition(":")
        if not sep or "/" in split:  # no split given (a URI's "://" is not a split separator)
            root, split = spec[4:], "train"
        return read_voc(root, split)
    if spec.startswith("coco:"):
        root, sep, ann = spec[5:].rpartition(":")
        if not sep or not ann.endswith(".json"):
            raise ValueError(f"coco source {spec!r} must be coco:ROOT:ANNOTATIONS.json")
        return read_coco(root, ann)
    if spec.endswith((".jsonl", ".parquet")):
        return read_manifest(spec)
    if _is_dir(spec):
        shards = manifest_shard_paths(spec)
        return [it for shard in shards for it in read_manifest(shard)] if shards else read_folder(spec)
    raise ValueError(f"input {spec!r} is not a manifest .jsonl, a folder, voc:ROOT[:SPLIT] or "
                     f"coco:ROOT:ANNOTATIONS.json; check the path")


class ManifestLineError(ValueError):
    """A manifest line or row that is not ``{id, image, labels, mask?}``; `id` is its id when it has one."""

    def __init__(self, message: str, id: str | None = None):
        super().__init__(message)
        self.id = id


def manifest_item(record: bytes | str | dict, base: str) -> Item:
    """The Item of one manifest line (JSON text) or row (dict); paths relative to the folder `base`."""
    rec = None
    try:
        rec = json.loads(record) if isinstance(record, (bytes, str)) else record
        labels = rec.get("labels")
        if labels is not None and not isinstance(labels, (list, tuple)):
            raise TypeError("labels must be a list or null")
        return Item(str(rec["id"]), _join(base, rec["image"]), None if labels is None else tuple(map(str, labels)),
                    _join(base, rec["mask"]) if rec.get("mask") else None)
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # json.JSONDecodeError is a ValueError
        rid = rec.get("id") if isinstance(rec, dict) else None
        raise ManifestLineError(f"not a manifest line with id, image and labels or none ({type(e).__name__}: {e})",
                                None if rid is None else str(rid)) from None


def read_manifest(path: str | Path) -> list[Item]:
    """Items of a manifest JSONL or Parquet file; a malformed line raises ValueError naming the line."""
    path = str(path)
    base = _parent(path)
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        fs, p = filesystem(path)
        records = enumerate(pq.read_table(p, filesystem=fs).to_pylist(), start=1)
    else:
        records = ((n, line) for n, line in enumerate(_read_text(path).splitlines(), start=1) if line.strip())
    items = []
    for n, record in records:
        try:
            items.append(manifest_item(record, base))
        except ManifestLineError as e:
            raise ValueError(f"{path}:{n}: {e}") from None
    return items


def manifest_shard_paths(folder: str) -> list[str]:
    """The manifest shards (``*.jsonl``, ``*.parquet``) under a folder that is not a folder of images."""
    if folder_has_labels(folder):
        return []
    return [_join(folder, rel) for rel in _list_files(folder)
            if rel.endswith((".jsonl", ".parquet")) and not posixpath.basename(rel).startswith((".", "_"))]


def read_folder(folder: str) -> list[Item]:
    """Images under `folder` with labels from labels.jsonl or labels.csv beside them (None where not listed)."""
    labels = _folder_labels(folder) or {}
    items = []
    for rel in _list_files(folder):
        if rel.lower().endswith(IMAGE_EXTENSIONS):
            items.append(Item(posixpath.splitext(rel)[0], _join(folder, rel), labels.get(rel)))
    if not items:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    return items


def folder_has_labels(folder: str) -> bool:
    """Whether a folder of images has a labels file (labels.jsonl or labels.csv)."""
    return any(is_file(_join(folder, name)) for name in ("labels.jsonl", "labels.csv"))


def unlabelled_folder(spec: str) -> bool:
    """Whether SOURCE `spec` is a folder of images without a labels file."""
    return (not spec.startswith(("voc:", "coco:")) and not spec.endswith((".jsonl", ".parquet")) and _is_dir(spec)
            and not folder_has_labels(spec) and not manifest_shard_paths(spec))


def _folder_labels(folder: str) -> dict[str, tuple[str, ...]] | None:
    jsonl, csv_path = _join(folder, "labels.jsonl"), _join(folder, "labels.csv")
    if is_file(jsonl):
        out = {}
        for n, line in enumerate(_read_text(jsonl).splitlines(), start=1):
            if line.strip():
                try:
                    rec = json.loads(line)
                    out[rec["image"]] = tuple(rec["labels"])
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(f"{jsonl}:{n}: expected {{\"image\": ..., \"labels\": [...]}} ({e})") from None
        return out
    if is_file(csv_path):
        rows = csv.DictReader(io.StringIO(_read_text(csv_path)))
        if not rows.fieldnames or not {"image", "labels"} <= set(rows.fieldnames):
            raise ValueError(f"{csv_path} needs a header with 'image' and 'labels' columns")
        return {r["image"]: tuple(l.strip() for l in (r["labels"] or "").split(";") if l.strip()) for r in rows}
    return None


def read_voc(root: str, split: str = "train") -> list[Item]:
    """VOC2012: ids from ImageSets/Segmentation/SPLIT.txt, labels from the XML annotations."""
    listing = _join(root, f"ImageSets/Segmentation/{split}.txt")
    if not is_file(listing):
        raise ValueError(f"no {listing}: voc:ROOT[:SPLIT] needs the VOC2012 folder (with ImageSets/) and "
                         f"a split such as train, val or trainval")
    masks = set(_list_files(_join(root, "SegmentationClass"))) if _is_dir(_join(root, "SegmentationClass")) else set()
    items = []
    for vid in _read_text(listing).split():
        xml = ET.fromstring(read_bytes(_join(root, f"Annotations/{vid}.xml")))
        labels = tuple(dict.fromkeys(o.findtext("name", "").strip() for o in xml.iter("object")))
        mask = _join(root, f"SegmentationClass/{vid}.png") if f"{vid}.png" in masks else None
        items.append(Item(vid, _join(root, f"JPEGImages/{vid}.jpg"), labels, mask))
    return items


def read_coco(root: str, annotations: str) -> list[Item]:
    """COCO instances JSON: an image's labels are its instances' categories (labelset names)."""
    data = json.loads(_read_text(annotations))
    names = {c["id"]: COCO_RENAMES.get(c["name"], c["name"]) for c in data["categories"]}
    per_image: dict[int, list[str]] = {}
    for a in data.get("annotations", []):
        per_image.setdefault(a["image_id"], []).append(names[a["category_id"]])
    return [Item(str(img["id"]), _join(root, img["file_name"]),
                 tuple(dict.fromkeys(per_image.get(img["id"], []))))
            for img in data["images"]]


# ------------------------------------------------------------------ decoding


def decode_image(data: bytes, max_pixels: int = 50_000_000) -> np.ndarray:
    """Image bytes -> uint8 HxWx3 RGB, upright (EXIF orientation applied).

    Any Pillow mode is converted to RGB. Images above `max_pixels` are refused before
    decoding (decompression-bomb guard) with a ValueError.
    """
    return decode_within(data, max_pixels)[0]


def decode_within(data: bytes, max_pixels: int = 50_000_000, max_side: int | None = None
                  ) -> tuple[np.ndarray, tuple[int, int]]:
    """Image bytes -> (uint8 RGB pixels, upright (height, width) of the whole image).

    The pixels are the upright image shrunk so its long side is at most `max_side`
    (``wsss_ray.budget``; None: full size). A JPEG is decoded straight at a reduced
    scale when that is still at least the size wanted (Pillow's ``draft``), so a
    large photo is never held at full size. Images above `max_pixels` are refused
    before decoding (decompression-bomb guard) with a ValueError.
    """
    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        if w * h > max_pixels:
            raise ValueError(f"image is {w}x{h} = {w * h} pixels, above the {max_pixels} limit; "
                             f"downscale it or raise max_pixels")
        turned = img.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)  # upright, width and height swap
        full = (w, h) if turned else (h, w)
        want = fit_side(*full, max_side)
        if want != full and img.format == "JPEG":
            img.draft("RGB", (want[0], want[1]) if turned else (want[1], want[0]))
        pixels = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    return shrink(pixels, want), full


def load_image(path: str) -> np.ndarray:
    """uint8 HxWx3 RGB of a local path or URI, EXIF orientation applied."""
    return decode_image(read_bytes(path))


def load_mask(path: str) -> np.ndarray:
    """A single-channel mask PNG (palette indices, not colours) of a local path or URI."""
    with Image.open(io.BytesIO(read_bytes(path))) as img:
        return np.array(img)
