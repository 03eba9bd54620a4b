"""Bring a person's corrections back: import a Label Studio export of reviewed masks.

    python -m wsss_ray.review import FILE --output OUTPUT [--labelset NAME]

FILE is Label Studio's JSON export (Export -> JSON) of a project made with
``python -m wsss_ray.export OUTPUT --format labelstudio``: each task's ``data.id`` is a
row's id. The latest non-skipped annotation of each task becomes that id's reviewed mask
(its brushes painted in order; unpainted pixels are background), stored with who made
it, when and where it came from under ``OUTPUT/_reviewed/`` (``wsss_ray.store.reviewed``),
atomically. Importing the same annotations again changes nothing. Training then uses a
reviewed mask in place of the pseudo-mask, every pixel trusted, and ``export`` writes it.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys

from wsss_ray.store import read_bytes
from wsss_ray.export import class_names
from wsss_ray.labelstudio import annotation_masks
from wsss_ray.store import iter_output, parquet_files
from wsss_ray.store import write_reviews


def import_labelstudio(export_file: str, output: str, labelset: str | None = None) -> dict:
    """Store the annotations of a Label Studio JSON export as reviewed masks of `output`'s rows."""
    if not parquet_files(output)[1]:
        raise ValueError(f"{output} holds no Parquet files; pass the labelling job's --output")
    try:
        tasks = json.loads(read_bytes(export_file))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {export_file} as a Label Studio JSON export ({e}); "
                         f"export the project with Export -> JSON") from None
    if not isinstance(tasks, list):
        raise ValueError(f"{export_file} is not a Label Studio JSON export (a list of tasks); "
                         f"export the project with Export -> JSON")
    annotations = {a["id"]: a for a in annotation_masks(tasks, class_names(output, labelset))}
    sizes = {}  # of the annotated ids only: the output is streamed, whatever its size
    for batch in iter_output(output, ["id", "width", "height"]):
        for row in batch.to_pylist():
            if row["id"] in annotations:
                sizes[row["id"]] = (row["height"], row["width"])
    unknown = sorted(set(annotations) - set(sizes))
    reviews = []
    for row_id, ann in sorted(annotations.items()):
        if row_id not in sizes:
            continue
        if ann["mask"].shape != sizes[row_id]:
            raise ValueError(f"the annotation of id {row_id!r} is {ann['mask'].shape[1]}x{ann['mask'].shape[0]} "
                             f"but its image is {sizes[row_id][1]}x{sizes[row_id][0]}; "
                             f"was the project made from another output?")
        height, width = ann["mask"].shape
        reviews.append({"id": row_id, "mask": ann["mask"], "width": width, "height": height,
                        "reviewer": ann["reviewer"], "reviewed_at": ann["reviewed_at"],
                        "source": f"{export_file}#task={ann['task']},annotation={ann['annotation']}"})
    summary = {"tasks": len(tasks), "reviewed": len(reviews), "unknown_ids": len(unknown), "file": None, "new": False}
    if reviews:
        summary["file"], summary["new"] = write_reviews(output, reviews)
    if unknown:
        summary["first_unknown_ids"] = unknown[:5]
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wsss_ray.review", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="store a Label Studio JSON export's annotations as reviewed masks")
    imp.add_argument("file", help="Label Studio's JSON export (local path or URI)")
    imp.add_argument("--output", required=True, help="the labelling job's Parquet folder or URI")
    imp.add_argument("--labelset", default=None, help="voc | coco | toyworld | PATH.yaml (default: the rows' own)")
    a = p.parse_args(argv)
    try:
        print(json.dumps(import_labelstudio(a.file, a.output, a.labelset)))
    except ValueError as e:
        p.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
