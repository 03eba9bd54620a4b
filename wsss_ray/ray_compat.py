"""Workarounds for known Ray 2.60 issues, each in one place with its reason.

- Ray Data's default for actor pools is unbounded actor restarts and task retries,
  which turns a poison input (one that kills its actor every time) into a hang;
  :data:`ACTOR_RETRIES` bounds the restarts, and :func:`actor_pool_map` is how every
  job's actor stage gets them. Task retries stay unbounded: an actor
  whose node is lost restarts elsewhere, and until it is up (seconds: a new
  process, the model loaded) each submission fails with ActorUnavailableError and
  uses up one retry, so a bounded count fails the job on a node loss. Ray 2.60
  offers only the keyword form, which it warns about (to go in 2.64).
- Every Ray Data actor pool makes the driver's core worker log an error-level line,
  "Actor ... has constructor arguments in the object store and max_restarts > 0"
  (ray-project/ray#57733: Ray Data itself passes its map function by reference).
  The references live as long as the dataset, so the warning does not apply here;
  :func:`quiet_known_ray_errors` drops exactly that line from the job's stderr so a
  healthy run prints no error.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from typing import Iterator

ACTOR_RETRIES = {"max_restarts": 3, "max_task_retries": -1}
KNOWN_HARMLESS = (b"has constructor arguments in the object store and max_restarts > 0",)


@contextlib.contextmanager
def actor_retry_keywords() -> Iterator[dict]:
    """Yield :data:`ACTOR_RETRIES` for ``map_batches`` with Ray's deprecation warning for them silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        yield dict(ACTOR_RETRIES)


def actor_pool_map(ds, stage: type, concurrency: tuple[int, int], num_gpus: float | None, num_cpus: float,
                   **map_kwargs):
    """``ds.map_batches(stage, ...)`` on a pool of `stage` actors autoscaling between the `concurrency`
    bounds, with :data:`ACTOR_RETRIES`: an actor that dies restarts and its batch runs again, a
    bounded number of times (the one place of that policy for every job)."""
    import ray

    lo, hi = concurrency
    with actor_retry_keywords() as retries:
        return ds.map_batches(stage, compute=ray.data.ActorPoolStrategy(min_size=lo, max_size=hi),
                              num_gpus=num_gpus or None, num_cpus=num_cpus, **retries, **map_kwargs)


@contextlib.contextmanager
def quiet_known_ray_errors(patterns: tuple[bytes, ...] = KNOWN_HARMLESS) -> Iterator[None]:
    """Drop the lines containing any of `patterns` from this process's stderr (fd 2, C++ logs included).

    Everything else passes through unchanged, line by line.
    """
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    real = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        pending = b""
        with os.fdopen(read_end, "rb", buffering=0) as src:
            for chunk in iter(lambda: src.read(65536), b""):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    if not any(p in line for p in patterns):
                        os.write(real, line + b"\n")
        if pending:
            os.write(real, pending)

    thread = threading.Thread(target=pump, daemon=True, name="wsss-ray-stderr")
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)  # closes our pipe end: the pump drains what is left and stops
        thread.join(timeout=2)
