"""Files, local or remote: one resolver for paths and URIs, and one atomic write.

Every path the project reads or writes may be a local path or a URI that pyarrow
understands (``s3://``, ``gs://``, ``file://``...). Writes go through
:func:`atomic_write`: the bytes land under a hidden temporary name beside the
target and are moved onto it once complete, so a reader (or a re-run after a
kill) sees the whole file or none of it.
"""

from __future__ import annotations

import contextlib
import random
import time
import posixpath
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pyarrow.fs as pafs

T = TypeVar("T")
TMP_MARK = ".tmp-"  # in the names of files being written; a hidden name (leading ".") hides them from readers


S3_ATTEMPTS = 10  # tries per S3 request: throttling and dropped connections are retried with backoff


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of a local path or URI (s3://, gs://, ...) and the path within it.

    S3 requests that fail transiently (503 SlowDown, a reset connection) are retried
    up to :data:`S3_ATTEMPTS` times with the AWS SDK's exponential backoff (pyarrow's
    default is 3); permanent errors (no such bucket, access denied) are not retried.
    """
    if "://" not in path:
        return pafs.LocalFileSystem(), str(Path(path).absolute())
    fs, inner = pafs.FileSystem.from_uri(path)
    if isinstance(fs, pafs.S3FileSystem):
        _, (options,) = fs.__reduce__()  # everything from_uri resolved (region, endpoint, scheme)
        fs = RetryingS3FileSystem.from_options(options)
    return fs, inner


def list_files(folder: str) -> tuple[pafs.FileSystem, list[pafs.FileInfo]]:
    """The filesystem of `folder` (local or URI) and the files directly in it, sorted by path
    (none before the folder exists)."""
    fs, path = filesystem(folder)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return fs, []
    infos = fs.get_file_info(pafs.FileSelector(path))
    return fs, sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)


class RetryingS3FileSystem(pafs.S3FileSystem):
    """pyarrow's S3 filesystem with :data:`S3_ATTEMPTS` tries per request, kept when pickled
    to Ray workers (pyarrow's own pickling drops the retry strategy)."""

    @classmethod
    def from_options(cls, options: dict) -> "RetryingS3FileSystem":
        return cls(**options, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS))

    def __reduce__(self):
        _, (options,) = super().__reduce__()
        return RetryingS3FileSystem.from_options, (options,)


# Object-store errors worth another try, as Ray Data's DataContext.retried_io_errors lists them:
# some reach pyarrow as INTERNAL_FAILURE (a 503 answer to a ranged GET), which the SDK does not retry.
TRANSIENT_ERRORS = ("AWS Error INTERNAL_FAILURE", "AWS Error NETWORK_CONNECTION", "AWS Error SLOW_DOWN",
                    "AWS Error UNKNOWN (HTTP status 503)", "AWS Error SERVICE_UNAVAILABLE")
ATTEMPTS = 5


def retry_transient(call: Callable[[], T], attempts: int = ATTEMPTS, backoff: float = 0.5) -> T:
    """``call()``, tried again with exponential backoff while it fails with one of :data:`TRANSIENT_ERRORS`."""
    for attempt in range(attempts):
        try:
            return call()
        except OSError as e:
            if attempt == attempts - 1 or not any(m in str(e) for m in TRANSIENT_ERRORS):
                raise
            time.sleep(backoff * 2 ** attempt * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable")


def read_bytes(path: str) -> bytes:
    """The bytes of a local path or URI (transient store errors retried)."""
    def read() -> bytes:
        fs, p = filesystem(path)
        with fs.open_input_file(p) as f:
            return f.read()

    return retry_transient(read)


@contextlib.contextmanager
def local_file(path: str) -> Iterator[str]:
    """A local path with the file's bytes, for the ``with`` block: `path` itself when local, else
    a temporary copy, removed when the block ends.

    For readers that take only local files (``torch.load``, MLflow's ``log_artifact``).
    """
    if "://" not in path:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="wsss-ray-") as tmp:
        local = Path(tmp) / posixpath.basename(path)
        local.write_bytes(read_bytes(path))
        yield str(local)


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


def atomic_write(path: str, data: bytes | Callable[[pafs.FileSystem, str], None],
                 check: Callable[[], None] | None = None) -> str:
    """Write `path` (local or URI) so that it appears complete or not at all; returns `path`.

    `data` is the file's bytes, or a function ``write(filesystem, tmp_path)`` that
    writes the file itself (``pq.write_table(table, tmp, filesystem=fs)``). Parent
    folders are created. `check`, called once the file is complete and just before
    it is moved into place, may raise to abandon it. A failed write leaves nothing behind;
    one that failed transiently is made again (:func:`retry_transient`).
    """
    return retry_transient(lambda: _atomic_write(path, data, check))


def _atomic_write(path: str, data: bytes | Callable[[pafs.FileSystem, str], None],
                  check: Callable[[], None] | None) -> str:
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
        if check is not None:
            check()
        fs.move(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(tmp)
        raise
    return path
