"""Files, local or remote: one resolver for paths and URIs, and one atomic write.

Every path the project reads or writes may be a local path or a URI that pyarrow
understands (``s3://``, ``gs://``, ``file://``...). Writes go through
:func:`atomic_write`: the bytes land under a hidden temporary name beside the
target and are moved onto it once complete, so a reader (or a re-run after a
kill) sees the whole file or none of it.
"""

from __future__ import annotations

import contextlib
import posixpath
import tempfile
import uuid
from pathlib import Path
from typing import Callable

import pyarrow.fs as pafs

TMP_MARK = ".tmp-"  # in the names of files being written; a hidden name (leading ".") hides them from readers


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of a local path or URI (s3://, gs://, ...) and the path within it."""
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), str(Path(path).absolute())


def read_bytes(path: str) -> bytes:
    """The bytes of a local path or URI."""
    fs, p = filesystem(path)
    with fs.open_input_file(p) as f:
        return f.read()


def local_file(path: str) -> str:
    """A local path with the file's bytes: `path` itself when local, else a temporary copy.

    For readers that take only local files (``torch.load``).
    """
    if "://" not in path:
        return path
    tmp = Path(tempfile.mkdtemp()) / posixpath.basename(path)
    tmp.write_bytes(read_bytes(path))
    return str(tmp)


def absolute(path: str) -> str:
    """A local path made absolute (workers and trials run in other working directories); URIs stay."""
    return path if "://" in path else str(Path(path).absolute())


def is_file(path: str) -> bool:
    """Whether a local path or URI names an existing file."""
    fs, p = filesystem(path)
    return fs.get_file_info(p).type == pafs.FileType.File


def run_folder(output: str) -> tuple[str, str]:
    """(storage_path, name) such that Ray's run folder ``storage_path/name`` is `output`."""
    output = absolute(output).rstrip("/")
    return posixpath.dirname(output), posixpath.basename(output)


def is_temporary(name: str) -> bool:
    """Whether a base name is one :func:`atomic_write` uses while a file is being written."""
    return name.startswith(".") and TMP_MARK in name


def atomic_write(path: str, data: bytes | Callable[[pafs.FileSystem, str], None]) -> str:
    """Write `path` (local or URI) so that it appears complete or not at all; returns `path`.

    `data` is the file's bytes, or a function ``write(filesystem, tmp_path)`` that
    writes the file itself (``pq.write_table(table, tmp, filesystem=fs)``). Parent
    folders are created. A failed write leaves nothing behind.
    """
    fs, p = filesystem(path)
    parent, name = posixpath.split(p)
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{name}{TMP_MARK}{uuid.uuid4().hex[:12]}"
    try:
        if callable(data):
            data(fs, tmp)
        else:
            with fs.open_output_stream(tmp) as f:
                f.write(data)
        fs.move(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(tmp)
        raise
    return path
