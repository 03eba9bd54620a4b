"""Export a pseudo-label output to palette PNGs named by id (what segmentation trainers read).

    python -m wsss_ray.export OUTPUT --png-dir DIR [--confidence-dir DIR] [--min-confidence 0.95]

Only ``ok`` rows are written; ids with ``/`` become sub-folders. The job's masks are
the full argmax; ``--min-confidence`` writes 255 (ignore) where the stored confidence
is below it, as CLIP-ES's pseudo-masks for the confidence-guided loss do. Files are
written atomically and re-exporting overwrites them with identical bytes. OUTPUT
may be a local folder or a URI. The rows are read a few hundred at a time, so the
export's memory does not grow with the output (docs/RESULTS.md); it needs pyarrow, not Ray.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from wsss_ray.files import atomic_write
from wsss_ray.masks import decode_png, encode_png, ignore_below
from wsss_ray.output import iter_output, parquet_files


def export_pngs(output: str, png_dir: str, confidence_dir: str | None = None,
                min_confidence: float | None = None) -> dict:
    """Write each ok row's mask (and optionally confidence) PNG; returns counts."""
    if not parquet_files(output)[1]:
        raise ValueError(f"{output} holds no Parquet files; pass the labelling job's --output")
    written = skipped = 0
    for batch in iter_output(output, ["id", "status", "mask", "confidence"]):  # constant memory
        for row in batch.to_pylist():
            if row["status"] != "ok":
                skipped += 1
                continue
            rel = Path(f"{row['id']}.png")
            if rel.is_absolute() or ".." in rel.parts:
                raise ValueError(f"id {row['id']!r} would be written outside {png_dir}; ids must be relative names")
            mask = row["mask"]
            if min_confidence is not None:
                mask = encode_png(ignore_below(decode_png(mask), decode_png(row["confidence"]), min_confidence))
            atomic_write(f"{png_dir}/{rel.as_posix()}", mask)
            if confidence_dir:
                atomic_write(f"{confidence_dir}/{rel.as_posix()}", row["confidence"])
            written += 1
    return {"written": written, "skipped_errors": skipped, "png_dir": png_dir}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wsss_ray.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output", help="the labelling job's Parquet folder or URI")
    p.add_argument("--png-dir", required=True, help="where <id>.png masks go")
    p.add_argument("--confidence-dir", default=None, help="also write <id>.png confidence maps here")
    p.add_argument("--min-confidence", type=float, default=None,
                   help="write 255 (ignore) where the confidence is below this, e.g. 0.95 (default: full argmax)")
    a = p.parse_args(argv)
    try:
        print(json.dumps(export_pngs(a.output, a.png_dir, a.confidence_dir, a.min_confidence)))
    except ValueError as e:
        p.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
