"""The skeleton every job in ``jobs/`` shares: its flags, and how it runs.

A job's script declares its flags (the shared ones by name: :data:`SHARED`, each
declared once here, its default read from the job's settings class) and calls
:func:`run_job`, which checks the output before Ray starts, holds the run's claim
on it, turns a :class:`~wsss_ray.errors.JobError` into one sentence and exit status
2, and prints the summary as one JSON line. Importing this module, and a job's
``--help``, import neither torch nor Ray: the job's run function is named by its
import path and loaded only to run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import sys
import threading
import time
import uuid
from typing import Any, Callable, Iterable, Iterator, Mapping

from wsss_ray.config import parse_settings
from wsss_ray.config.methods import load_target

GPU_DEFAULT = "when the cluster has GPUs or its autoscaler can start some"

# Flags several jobs take: the same name, meaning and help everywhere (the default is the job's own).
SHARED: dict[str, dict[str, Any]] = {
    "labelset": dict(help="voc | coco | toyworld | PATH.yaml"),
    "model": dict(help="toyclip | local-dir:PATH | hf-hub:ORG/REPO | open_clip name"),
    "pretrained": dict(help="pretrained tag or local weights file for an open_clip name"),
    "limit": dict(type=int, help="use at most N items"),
    "concurrency": dict(metavar="MIN[,MAX]", help="actors; the pool autoscales between MIN and MAX"),
    "num_gpus": dict(type=float, help=f"GPUs per actor (default: 1 {GPU_DEFAULT}, else 0)"),
    "num_cpus": dict(type=float, help="CPUs per actor"),
    "rows_per_file": dict(type=int, help="rows per Parquet file, the unit of resume"),
    "num_workers": dict(type=int, help="Ray Train workers (data-parallel ranks)"),
    "seed": dict(type=int, help="initialisation and shuffling seed"),
    "epochs": dict(type=int, help="total epochs; a resumed run trains only the missing ones"),
    "lr": dict(type=float, help="learning rate"),
}


def _default_text(value: Any, nargs: Any = None) -> str:
    """A default as the flag takes it: a tuple comma-joined (``1,1``), or space-joined for a list flag."""
    if isinstance(value, tuple):
        return (" " if nargs else ",").join(map(str, value))
    return str(value)


class JobParser(argparse.ArgumentParser):
    """An ``argparse`` parser for a job whose settings are the dataclass `settings`:
    every flag's default is shown from it, and :meth:`shared` adds flags of :data:`SHARED`."""

    def __init__(self, doc: str | None, settings: type):
        super().__init__(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                         argument_default=None)
        self.settings = settings
        self._shown_defaults = {f.name: f.default for f in dataclasses.fields(settings)
                          if f.default is not dataclasses.MISSING}

    def flag(self, name: str, help: str, **kwargs) -> None:
        """``--name-with-dashes`` for the setting `name` (or ``dest``), its default appended to `help`."""
        dest = kwargs.get("dest", name)
        default = self._shown_defaults.get(dest)
        if default is not None and "(default" not in help and kwargs.get("action") != "store_const":
            help = f"{help} (default: {_default_text(default, kwargs.get('nargs'))})"
        self.add_argument(f"--{name.replace('_', '-')}", help=help, **kwargs)

    def shared(self, *names: str, **helps: str) -> None:
        """The shared flags `names`; ``name="..."`` in `helps` says what the flag means for this job."""
        for name in names:
            spec = dict(SHARED[name])
            if name in helps:
                spec["help"] = helps[name]
            self.flag(name, **spec)

    def gpu_flags(self, what: str = "one GPU per worker") -> None:
        """``--use-gpu`` / ``--no-gpu`` for a ``use_gpu: bool | None`` setting (None: decided by the cluster)."""
        self.add_argument("--use-gpu", action="store_const", const=True, help=f"{what} (default: {GPU_DEFAULT})")
        self.add_argument("--no-gpu", dest="use_gpu", action="store_const", const=False, help="CPU only")

    def parse(self, argv: list[str] | None, resolve: Callable[[Mapping, Any], Any] | None = None,
              tracked: bool = True, config_help: str | None = None):
        """(settings, mlflow_uri) from `argv`: the defaults < ``--config`` < the flags given
        (`resolve` when the job layers more, such as a model's own settings)."""
        extra = {"config_help": config_help} if config_help else {}
        return parse_settings(self, argv, resolve or self.settings, tracked=tracked, **extra)


STEP_EVERY_S = 10.0  # the longest a job is silent while it starts or finishes


@contextlib.contextmanager
def step(tag: str, what: str, every: float = STEP_EVERY_S, stream=None) -> Iterator[None]:
    """Say what a job is doing, on stderr: ``[tag] what ...`` now, ``[tag]   still what (N s)``
    every `every` seconds while it lasts, and its time when it ends (a step that raises says no more:
    its error does)."""
    stream = stream or sys.stderr
    start, done = time.monotonic(), threading.Event()
    print(f"[{tag}] {what} ...", file=stream, flush=True)

    def remind() -> None:
        while not done.wait(every):
            print(f"[{tag}]   still {what} ({time.monotonic() - start:.0f} s)", file=stream, flush=True)

    reminder = threading.Thread(target=remind, daemon=True, name="wsss-ray-step")
    reminder.start()
    try:
        yield
    finally:
        done.set()
        reminder.join()
    print(f"[{tag}] {what}: done in {time.monotonic() - start:.1f} s", file=stream, flush=True)


def run_job(tag: str, config: Any, run: str, mlflow_uri: str | None = None, tracked: bool = True,
            claims_itself: bool = False, hide: Iterable[str] = ()) -> int:
    """Run a job: `run` (``"module:function"``) called with `config` (and `mlflow_uri` when
    `tracked`) on Ray; the summary it returns printed as one JSON line, `hide` keys left out.

    The output (``config.output``) is checked before Ray and MLflow start, and the run holds
    its claim while it writes, unless it ``claims_itself`` (the Parquet-writing jobs claim
    inside, with their writes). A :class:`~wsss_ray.errors.JobError` is one line on stderr
    and exit status 2.
    """
    import ray

    from wsss_ray.store import OutputClaim, check_output
    from wsss_ray.errors import exit_on_job_error
    from wsss_ray.ray_compat import quiet_known_ray_errors

    with quiet_known_ray_errors(), exit_on_job_error(tag):
        check_output(config.output)  # a held or unwritable output fails before Ray and MLflow start
        with step(tag, "importing the job's code (Ray" + (", MLflow)" if tracked else ")")):
            function = load_target(run)
            if tracked:
                importlib.import_module("wsss_ray.tracking")
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS")
            with step(tag, f"connecting to Ray at {address}" if address else "starting Ray (or joining the one "
                                                                             "running on this machine)"):
                ray.init()
        args = (config, mlflow_uri) if tracked else (config,)
        if claims_itself:
            summary = function(*args)
        else:
            with OutputClaim(config.output, uuid.uuid4().hex):
                summary = function(*args)
    print(json.dumps({k: v for k, v in summary.items() if k not in set(hide)}), flush=True)
    return 0


__all__ = ["SHARED", "JobParser", "run_job", "step"]
