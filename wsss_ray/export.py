"""Export a pseudo-label output to palette PNGs named by id (what segmentation trainers read).

    python -m wsss_ray.export OUTPUT --png-dir DIR [--confidence-dir DIR]

Only ``ok`` rows are written; ids with ``/`` become sub-folders. Files are written
atomically and re-exporting overwrites them with identical bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pyarrow.dataset as pads


def export_pngs(output: str, png_dir: str, confidence_dir: str | None = None) -> dict:
    """Write each ok row's mask (and optionally confidence) PNG; returns counts."""
    table = pads.dataset(output, format="parquet").to_table(columns=["id", "status", "mask", "confidence"])
    written = skipped = 0
    for batch in table.to_batches():
        for row in batch.to_pylist():
            if row["status"] != "ok":
                skipped += 1
                continue
            rel = Path(f"{row['id']}.png")
            if rel.is_absolute() or ".." in rel.parts:
                raise ValueError(f"id {row['id']!r} would be written outside {png_dir}; ids must be relative names")
            _write(Path(png_dir) / rel, row["mask"])
            if confidence_dir:
                _write(Path(confidence_dir) / rel, row["confidence"])
            written += 1
    return {"written": written, "skipped_errors": skipped, "png_dir": png_dir}


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wsss_ray.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output", help="the pseudo-label job's Parquet folder")
    p.add_argument("--png-dir", required=True, help="where <id>.png masks go")
    p.add_argument("--confidence-dir", default=None, help="also write <id>.png confidence maps here")
    a = p.parse_args(argv)
    if not Path(a.output).is_dir():
        p.error(f"{a.output} is not a folder of Parquet files; pass the job's --output")
    print(json.dumps(export_pngs(a.output, a.png_dir, a.confidence_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
