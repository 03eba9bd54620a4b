"""What each stage of a job asks the cluster for, decided the same way by every job.

GPUs: a job's GPU holders (CAM actors, segmentation actors, Ray Train workers) take
one GPU each when the flag says so, when the cluster has a GPU now, or when its
autoscaler can start nodes that have GPUs (the shipped clusters start their GPU
workers at zero). :func:`gpus_per_holder` decides and prints the choice and why.

Long-lived holders (CAM actors, segmentation actors, Ray Train workers) keep their
CPUs for the whole run, and the short CPU tasks beside them (decode, CRF, Ray Data's
reads) need CPU too. On a cluster smaller than that (a 1-CPU laptop) the holders
would take every CPU and the job would stall, so the requests shrink to fit. A
cluster with no CPUs yet (an autoscaler starting from zero) is left to grow.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ray


def fit_cpus(holders: int, per_holder: float, tag: str, budget: float | None = None) -> tuple[float, float]:
    """(CPUs per holder, CPUs per task) that fit the cluster (or a `budget` of CPUs), with a note when shrunk.

    Holders get what they ask for when the cluster has that plus one CPU for tasks.
    Otherwise they share what is left after one whole CPU for tasks (Ray Data's file
    listing asks for a whole CPU), or half the cluster when it has too few for that,
    and tasks get the rest (at most one CPU each).
    """
    cpus = budget if budget is not None else ray.cluster_resources().get("CPU", 0)
    need = holders * per_holder + 1
    if not 0 < cpus < need:
        return per_holder, 1.0
    spare = 1.0 if cpus - 1.0 >= 0.01 * holders else cpus / 2
    holder = min(per_holder, (cpus - spare) / holders)
    task = min(1.0, cpus - holder * holders)
    print(f"[{tag}] {cpus:g} CPUs < {need:g} requested; each of {holders} actors/workers gets {holder:.2f} CPUs "
          f"and each task {task:.2f}", file=sys.stderr, flush=True)
    return holder, task


def gpus_per_holder(requested: float | None, tag: str, holders: str = "CAM actors", flag: str = "--num-gpus",
                    stream=sys.stderr) -> float:
    """GPUs per actor or worker: `requested` if given, else 1 when the cluster has or can start GPUs, else 0.

    Prints one line saying where the job's holders go and why, and how to override it.
    """
    if requested is not None:
        gpus, why = requested, f"{flag} given"
    elif (now := ray.cluster_resources().get("GPU", 0)) >= 1:
        gpus, why = 1.0, f"the cluster has {now:g} GPU(s)"
    else:
        launchable, where = autoscaler_gpus()
        gpus, why = ((1.0, f"no GPU yet, but its autoscaler can start nodes with {launchable:g} GPU(s) in all ({where})")
                     if launchable >= 1 else (0.0, f"no GPU in the cluster and none its autoscaler can start ({where})"))
    place = f"{gpus:g} GPU each" if gpus else "CPU only"
    print(f"[{tag}] {holders}: {place}, because {why}; CPU tasks (decode, CRF, writes) ask for CPUs only. "
          f"Override with {flag}.", file=stream, flush=True)
    return gpus


def use_gpu(config, tag: str) -> bool:
    """A training job's ``use_gpu`` (True, False, or None: decided as for actors) as Ray Train's bool."""
    requested = None if config.use_gpu is None else float(config.use_gpu)
    return bool(gpus_per_holder(requested, tag, "Ray Train workers", "--use-gpu / --no-gpu"))


def autoscaler_gpus() -> tuple[float, str]:
    """(The most GPUs the cluster's autoscaler can start, where that was read).

    Autoscaler v2 (KubeRay, or the cluster launcher with ``RAY_enable_autoscaler_v2=1``)
    publishes its node types to the GCS, which is what Ray Train reads too. Autoscaler v1
    publishes nothing, so the job reads the autoscaling config its monitor was started
    with (``--autoscaling-config``: ``~/ray_bootstrap_config.yaml`` on a cluster-launcher
    head, ``cluster/local.yaml`` on the fake cluster), visible when the job's driver runs
    on the head node, as ``ray job submit`` entrypoints do.
    """
    try:
        from ray._private.state import state

        published = state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 - an older GCS or no autoscaler: try the next source
        published = None
    if published:
        return float(published.get("GPU", 0)), "the autoscaler's published node types"
    path = monitor_config_path()
    if path is None:
        return 0.0, "no autoscaler config found"
    return config_gpus(path), path


def config_gpus(path: str) -> float:
    """The most GPUs the node types of an autoscaling config YAML can add up to."""
    import yaml

    with open(path) as f:
        config = yaml.safe_load(f) or {}
    total = 0.0
    for node_type in (config.get("available_node_types") or {}).values():
        gpus = float((node_type.get("resources") or {}).get("GPU", 0))
        total += gpus * int(node_type.get("max_workers", config.get("max_workers", 0)) or 0)
    return total


def monitor_config_path(proc_root: Path = Path("/proc")) -> str | None:
    """The ``--autoscaling-config`` of the autoscaler v1 monitor running on this node (Linux), if any."""
    for proc in proc_root.glob("[0-9]*/cmdline"):
        try:
            args = proc.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(a.endswith("autoscaler/_private/monitor.py") for a in args):
            for a in args:
                if a.startswith("--autoscaling-config="):
                    return str(Path(a.split("=", 1)[1]).expanduser())
    return None


def actor_device(num_gpus: float) -> str:
    """The torch device of an actor given `num_gpus`: "cuda", or "cpu" with a warning when no CUDA is usable.

    A GPU Ray assigns but torch cannot use (a fake GPU of a test cluster, a driver
    mismatch) runs on the CPU rather than failing every batch.
    """
    if not num_gpus:
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    print(f"[wsss-ray] this actor holds GPU(s) {ray.get_gpu_ids()} but torch sees no CUDA device; running on CPU",
          file=sys.stderr, flush=True)
    return "cpu"
