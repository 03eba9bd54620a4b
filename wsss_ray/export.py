"""Export a pseudo-label output to the formats people review and train with.

    python -m wsss_ray.export OUTPUT --format png|labelstudio|coco|fiftyone --to PATH [--min-confidence C]

- ``png`` (``--to DIR``): palette PNGs named ``<id>.png`` (ids with ``/`` become
  sub-folders), what segmentation trainers read; ``--confidence-dir`` adds the confidence maps.
- ``labelstudio`` (``--to DIR``): ``tasks.json``, Label Studio tasks whose predictions hold
  each class's mask as a ``brushlabels`` result in Label Studio's RLE, scored by ``quality``
  (its review queue sorts by it) with the run id as ``model_version``; ``data`` holds the
  row's ``id`` beside the image's URL (local files through Label Studio's local-storage
  URLs under ``--document-root``; ``s3://`` and other URIs as they are, for its cloud
  storage); and ``labeling_config.xml``, the project's config (a brush per class, in the
  PNGs' colours). docs/guides/review.md walks through a project.
- ``coco`` (``--to FILE.json``): COCO's format, one RLE segmentation (pycocotools'
  encoding) per (image, class) with its ``score`` (the label's ``label_quality``);
  ``images[].file_name`` is the row's image and ``images[].row_id`` its id.
- ``fiftyone`` (``--to DIR``): a dataset on disk in FiftyOne's ``LegacyFiftyOneDataset``
  layout: the image, the pseudo-mask (``pseudo_mask``) and, with ``--truth SOURCE``, the
  ground truth (``ground_truth``) as ``Segmentation`` fields, the confidence as a ``Heatmap``,
  ``quality``, ``label_quality``, ``labels``, ``row_id`` and ``reviewed``. Load it with
  ``fo.Dataset.from_dir(DIR, dataset_type=fo.types.LegacyFiftyOneDataset)``.

Only ``ok`` rows are written, and rows a person reviewed (``wsss_ray.store.reviewed``): their
reviewed mask replaces the pseudo-mask (confidence 255, quality 1). ``--min-confidence``
drops the pixels whose stored confidence is below it (255, ignore, in PNGs; unpainted in
Label Studio and COCO), as CLIP-ES's pseudo-masks for the confidence-guided loss do.
Rows are read a few hundred at a time and written as they come, so memory does not grow
with the output (docs/RESULTS.md). Files are written atomically; exporting again rewrites
them whole. OUTPUT may be a local folder or a URI. Needs pyarrow, not Ray.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import posixpath
import sys
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote

import numpy as np

from wsss_ray.store import atomic_write, filesystem

from wsss_ray.labelset import IGNORE_INDEX, load_labelset
from wsss_ray.masks import decode_png, encode_png, ignore_below, voc_palette
from wsss_ray.store import iter_output, parquet_files
from wsss_ray.store import reviewed_masks

FORMATS = ("png", "labelstudio", "coco", "fiftyone")
COLUMNS = ["id", "image", "labels", "width", "height", "status", "mask", "confidence", "quality", "label_quality",
           "run_id"]


# ------------------------------------------------------------------ the rows to export


def export_rows(output: str, min_confidence: float | None = None) -> Iterator[dict]:
    """The rows to export, file by file: ok rows and reviewed ones, with ``mask`` and
    ``confidence`` decoded (uint8 HxW), ``reviewed`` set, and `min_confidence` applied."""
    if not parquet_files(output)[1]:
        raise ValueError(f"{output} holds no Parquet files; pass the labelling job's --output")
    if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"--min-confidence must lie in [0, 1], got {min_confidence}")
    reviewed = reviewed_masks(output)
    for batch in iter_output(output, COLUMNS):
        for row in batch.to_pylist():
            review = reviewed.get(row["id"])
            if review is None and row["status"] != "ok":
                continue
            row["reviewed"] = review is not None
            if review is not None:
                row["mask"] = decode_png(review["mask"])
                row["confidence"] = np.full(row["mask"].shape, 255, np.uint8)
                row["quality"], row["label_quality"] = 1.0, [1.0] * len(row["labels"] or [])
            else:
                row["mask"], row["confidence"] = decode_png(row["mask"]), decode_png(row["confidence"])
                if min_confidence is not None:
                    row["mask"] = ignore_below(row["mask"], row["confidence"], min_confidence)
            yield row


def relative_id(row_id: str, folder: str) -> str:
    """`row_id` as a relative file name under `folder`; an id that would leave it is an error."""
    rel = Path(row_id)
    if rel.is_absolute() or ".." in rel.parts or not row_id:
        raise ValueError(f"id {row_id!r} would be written outside {folder}; ids must be relative names")
    return rel.as_posix()


def local_or_uri(image: str) -> str:
    """A local image path made absolute (readers elsewhere do not share our working directory); URIs as they are."""
    return image if "://" in image else os.path.abspath(image)


def class_names(output: str, labelset: str | None = None) -> list[str]:
    """The class names of `output`'s masks: of `labelset`, else of the labelset its rows name."""
    if labelset is None:
        for batch in iter_output(output, ["labelset"], batch_rows=1):
            labelset = batch.column("labelset")[0].as_py()
            break
    if not labelset:
        raise ValueError(f"the rows of {output} name no labelset; give --labelset")
    return list(load_labelset(labelset).names)


def _write_text(path: str, write: Callable[[io.TextIOBase], None]) -> None:
    """Write a text file atomically, streaming through `write(stream)`."""
    def stream(fs, tmp: str) -> None:
        with fs.open_output_stream(tmp) as raw, io.TextIOWrapper(raw, encoding="utf-8") as text:
            write(text)
    atomic_write(path, stream)


# ------------------------------------------------------------------ formats


def export_png(output: str, to: str, min_confidence: float | None = None, confidence_dir: str | None = None,
               **_: Any) -> dict:
    """Each row's mask (and optionally confidence) as ``<id>.png``."""
    written = 0
    for row in export_rows(output, min_confidence):
        rel = relative_id(row["id"], to)
        atomic_write(f"{to}/{rel}.png", encode_png(row["mask"]))
        if confidence_dir:
            atomic_write(f"{confidence_dir}/{rel}.png", encode_png(row["confidence"], palette=False))
        written += 1
    return {"written": written, "to": to}


def export_labelstudio(output: str, to: str, min_confidence: float | None = None, labelset: str | None = None,
                       document_root: str = "/", **_: Any) -> dict:
    """``tasks.json`` (predictions scored by quality) and ``labeling_config.xml`` for a Label Studio project."""
    from wsss_ray.labelstudio import JsonArrayWriter, brush_results, labeling_config, task

    root = os.path.abspath(document_root)
    counts = {"written": 0, "reviewed": 0}
    names = class_names(output, labelset)

    def image_url(image: str) -> str:
        if "://" in image:
            return image
        path = os.path.abspath(image)
        if os.path.commonpath([root, path]) != root:
            raise ValueError(f"image {image} lies outside --document-root {root}; Label Studio serves local files "
                             f"only from under its LOCAL_FILES_DOCUMENT_ROOT; pass that folder")
        return "/data/local-files/?d=" + quote(os.path.relpath(path, root))

    def write(stream) -> None:
        tasks = JsonArrayWriter(stream)
        for row in export_rows(output, min_confidence):
            values = [int(v) for v in np.unique(row["mask"]) if v not in (0, IGNORE_INDEX)]
            tasks.add(task(row["id"], image_url(row["image"]), brush_results(row["mask"], names, values),
                           score=row["quality"], model_version=row["run_id"], reviewed=row["reviewed"]))
            counts["written"] += 1
            counts["reviewed"] += row["reviewed"]
        tasks.close()

    _write_text(posixpath.join(to, "tasks.json"), write)
    atomic_write(posixpath.join(to, "labeling_config.xml"), labeling_config(names, voc_palette()).encode())
    return {**counts, "to": to, "tasks": posixpath.join(to, "tasks.json"),
            "labeling_config": posixpath.join(to, "labeling_config.xml")}


def export_coco(output: str, to: str, min_confidence: float | None = None, labelset: str | None = None,
                **_: Any) -> dict:
    """One COCO JSON: images, categories and an RLE annotation with a score per (image, class).

    Two passes over the output (images, then annotations), so neither list is held in memory.
    """
    from pycocotools import mask as coco_mask

    if not to.endswith(".json"):
        raise ValueError(f"--to {to} must name the .json file to write for --format coco")
    names = class_names(output, labelset)
    counts = {"images": 0, "annotations": 0, "reviewed": 0}

    def write(stream) -> None:
        stream.write('{"info": {"description": ' + json.dumps(f"wsss-ray pseudo-masks of {output}") + "},\n")
        stream.write('"licenses": [],\n"categories": ' + json.dumps(
            [{"id": i + 1, "name": n, "supercategory": ""} for i, n in enumerate(names)]) + ',\n"images": [')
        sep = "\n"
        for index, row in enumerate(export_rows(output, min_confidence)):
            stream.write(sep + json.dumps({"id": index + 1, "file_name": row["image"], "width": row["width"],
                                           "height": row["height"], "row_id": row["id"],
                                           "quality": row["quality"], "reviewed": row["reviewed"]}))
            sep = ",\n"
            counts["images"] += 1
            counts["reviewed"] += row["reviewed"]
        stream.write('\n],\n"annotations": [')
        sep = "\n"
        for index, row in enumerate(export_rows(output, min_confidence)):
            label_quality = dict(zip(row["labels"] or [], row["label_quality"] or []))
            for v in (int(v) for v in np.unique(row["mask"])):
                if v in (0, IGNORE_INDEX) or v > len(names):
                    continue
                rle = coco_mask.encode(np.asfortranarray(row["mask"] == v))
                counts["annotations"] += 1
                stream.write(sep + json.dumps({
                    "id": counts["annotations"], "image_id": index + 1, "category_id": v,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                    "area": float(coco_mask.area(rle)), "bbox": [float(x) for x in coco_mask.toBbox(rle)],
                    "iscrowd": 0, "score": label_quality.get(names[v - 1], row["quality"])}))
                sep = ",\n"
        stream.write("\n]}\n")

    _write_text(to, write)
    return {**counts, "to": to}


def export_fiftyone(output: str, to: str, min_confidence: float | None = None, labelset: str | None = None,
                    truth: str | None = None, **_: Any) -> dict:
    """A FiftyOne dataset on disk (``LegacyFiftyOneDataset``): samples.json, metadata.json, mask PNGs."""
    from wsss_ray.store import read_source

    fs, local = filesystem(to)
    if type(fs).__name__ != "LocalFileSystem":
        raise ValueError(f"--to {to} must be a local folder for --format fiftyone (FiftyOne reads masks from disk)")
    root = os.path.abspath(local)
    truths = {it.id: local_or_uri(it.mask) for it in read_source(truth) if it.mask} if truth else {}
    counts = {"written": 0, "reviewed": 0, "ground_truth": 0}
    names = class_names(output, labelset)

    def segmentation(path: str) -> dict:
        return {"_cls": "Segmentation", "tags": [], "mask_path": path}

    def write(stream) -> None:
        from wsss_ray.labelstudio import JsonArrayWriter

        stream.write('{"samples": ')
        samples = JsonArrayWriter(stream)
        for n, row in enumerate(export_rows(output, min_confidence)):
            mask_path = os.path.join(root, "fields", "pseudo_mask", f"{n:09d}.png")
            map_path = os.path.join(root, "fields", "confidence", f"{n:09d}.png")
            # grayscale, not the palette PNG: FiftyOne reads a palette PNG as its colours
            atomic_write(mask_path, encode_png(row["mask"], palette=False))
            atomic_write(map_path, encode_png(row["confidence"], palette=False))
            sample = {"filepath": local_or_uri(row["image"]), "tags": [], "metadata": None,
                      "row_id": row["id"], "labels": row["labels"] or [], "quality": row["quality"],
                      "label_quality": row["label_quality"] or [], "reviewed": row["reviewed"],
                      "run_id": row["run_id"], "pseudo_mask": segmentation(mask_path),
                      "confidence": {"_cls": "Heatmap", "tags": [], "map_path": map_path, "range": [0, 255]}}
            if row["id"] in truths:
                sample["ground_truth"] = segmentation(truths[row["id"]])
                counts["ground_truth"] += 1
            samples.add(sample)
            counts["written"] += 1
            counts["reviewed"] += row["reviewed"]
        samples.close()
        stream.write("}\n")

    _write_text(os.path.join(root, "samples.json"), write)
    field = "fiftyone.core.fields."
    segment = f"{field}EmbeddedDocumentField(fiftyone.core.labels.Segmentation)"
    fields = {"filepath": f"{field}StringField", "tags": f"{field}ListField({field}StringField)",
              "metadata": f"{field}EmbeddedDocumentField(fiftyone.core.metadata.ImageMetadata)",
              "row_id": f"{field}StringField", "labels": f"{field}ListField({field}StringField)",
              "quality": f"{field}FloatField", "label_quality": f"{field}ListField({field}FloatField)",
              "reviewed": f"{field}BooleanField", "run_id": f"{field}StringField", "pseudo_mask": segment,
              "confidence": f"{field}EmbeddedDocumentField(fiftyone.core.labels.Heatmap)"}
    if truths:
        fields["ground_truth"] = segment
    targets = {"0": "background", **{str(i + 1): n for i, n in enumerate(names)}, str(IGNORE_INDEX): "ignore"}
    metadata = {"name": posixpath.basename(root.rstrip("/")) or "wsss-ray", "media_type": "image",
                "sample_fields": fields, "info": {"default_mask_targets": targets, "source": output}}
    atomic_write(os.path.join(root, "metadata.json"), json.dumps(metadata, indent=1).encode())
    return {**counts, "to": root}


EXPORTERS: dict[str, Callable[..., dict]] = {"png": export_png, "labelstudio": export_labelstudio,
                                             "coco": export_coco, "fiftyone": export_fiftyone}


def export(output: str, fmt: str, to: str, **options: Any) -> dict:
    """Export `output` to `to` in `fmt` (one of :data:`FORMATS`); returns the counts written."""
    if fmt not in EXPORTERS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return {"format": fmt, **EXPORTERS[fmt](output, to, **options)}


def export_pngs(output: str, png_dir: str, confidence_dir: str | None = None,
                min_confidence: float | None = None) -> dict:
    """``--format png`` under its earlier name."""
    return export_png(output, png_dir, min_confidence, confidence_dir)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wsss_ray.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output", help="the labelling job's Parquet folder or URI")
    p.add_argument("--format", choices=FORMATS, default="png", help="what to write (default: png)")
    p.add_argument("--to", help="where: a folder (png, labelstudio, fiftyone) or a .json file (coco)")
    p.add_argument("--png-dir", help=argparse.SUPPRESS)  # the earlier spelling of --format png --to DIR
    p.add_argument("--min-confidence", type=float, default=None,
                   help="leave out the pixels whose confidence is below this, e.g. 0.95 (default: full argmax)")
    p.add_argument("--confidence-dir", default=None, help="png: also write <id>.png confidence maps here")
    p.add_argument("--labelset", default=None, help="voc | coco | toyworld | PATH.yaml (default: the rows' own)")
    p.add_argument("--document-root", default="/",
                   help="labelstudio: Label Studio's LOCAL_FILES_DOCUMENT_ROOT; local images must lie under it")
    p.add_argument("--truth", default=None,
                   help="fiftyone: the labelling job's --input, to add its ground-truth masks as ground_truth")
    a = p.parse_args(argv)
    to = a.to or a.png_dir
    if to is None:
        p.error("--to is required: the folder (or, for coco, the .json file) to write")
    try:
        print(json.dumps(export(a.output, a.format, to, min_confidence=a.min_confidence,
                                confidence_dir=a.confidence_dir, labelset=a.labelset,
                                document_root=a.document_root, truth=a.truth)))
    except ValueError as e:
        p.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
