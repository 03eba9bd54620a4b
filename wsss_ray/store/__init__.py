"""Where the data lives: collections in, output folders out, and the corrections beside them.

Everything that only reads or writes storage is here, in the data's order:

    files     paths and URIs through pyarrow filesystems; the one atomic write
    sources   a SOURCE (manifest, folder, VOC, COCO) as items; image and mask decoding
    inputs    a SOURCE as a Ray Dataset, resumed and de-duplicated inside the dataset (Ray)
    claim     one writer per output: claims with a heartbeat, refusal, stale takeover
    output    an output folder: OUTPUT_SCHEMA, reading it file by file, scoring it
    writer    the driver skeleton of every Parquet-writing job: claim, resume, atomic sink (Ray)
    reviewed  the masks a person corrected, beside the output (OUTPUT/_reviewed)

The names below are the package's public surface; the jobs, the labeller and the tools
import them from ``wsss_ray.store``. They load on first use, so taking ``atomic_write``
does not import Ray.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_SURFACE = {
    "files": ("absolute", "atomic_write", "filesystem", "is_file", "is_temporary", "list_files",
              "local_file", "read_bytes", "run_folder"),
    "sources": ("Item", "decode_image", "decode_within", "load_image", "load_mask", "read_manifest",
                "read_source", "unlabelled_folder"),
    "inputs": ("pending", "read_items"),
    "claim": ("OutputBusy", "OutputClaim", "OutputUnwritable", "check_output"),
    "output": ("OUTPUT_SCHEMA", "batch_confusion", "iter_output", "output_overlays", "overview_path",
               "parquet_files", "read_output", "write_overview"),
    "writer": ("AtomicParquetSink", "ClaimLost", "evaluate_output", "write_pending"),
    "reviewed": ("reviewed_masks", "write_reviews"),
}
_HOME = {name: module for module, names in _SURFACE.items() for name in names}
__all__ = sorted(_HOME)

if TYPE_CHECKING:  # what the names are, for readers and type checkers; at run time they load lazily
    from wsss_ray.store.claim import OutputBusy, OutputClaim, OutputUnwritable, check_output
    from wsss_ray.store.files import (absolute, atomic_write, filesystem, is_file, is_temporary,
                                      list_files, local_file, read_bytes, run_folder)
    from wsss_ray.store.inputs import pending, read_items
    from wsss_ray.store.output import (OUTPUT_SCHEMA, batch_confusion, iter_output, output_overlays,
                                       overview_path, parquet_files, read_output, write_overview)
    from wsss_ray.store.reviewed import reviewed_masks, write_reviews
    from wsss_ray.store.sources import (Item, decode_image, decode_within, load_image, load_mask,
                                        read_manifest, read_source, unlabelled_folder)
    from wsss_ray.store.writer import AtomicParquetSink, ClaimLost, evaluate_output, write_pending


def __getattr__(name: str) -> Any:
    """A public name, from its module, imported on first use (PEP 562).

    Not cached here: the module's attribute is the one truth, so what a test patches there
    is what every importer sees, as with a direct import from the module.
    """
    if name not in _HOME:
        raise AttributeError(f"module 'wsss_ray.store' has no attribute {name!r}")
    return getattr(importlib.import_module(f"wsss_ray.store.{_HOME[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
