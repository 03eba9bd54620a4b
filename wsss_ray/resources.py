"""What each stage of a job asks the cluster for, decided the same way by every job.

Long-lived holders (CAM actors, segmentation actors, Ray Train workers) keep their
CPUs for the whole run, and the short CPU tasks beside them (decode, CRF, Ray Data's
reads) need CPU too. On a cluster smaller than that (a 1-CPU laptop) the holders
would take every CPU and the job would stall, so the requests shrink to fit. A
cluster with no CPUs yet (an autoscaler starting from zero) is left to grow.
"""

from __future__ import annotations

import sys

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


def gpus_per_actor(num_gpus: float | None) -> float:
    """`num_gpus` as given, else one GPU per actor when the cluster has any GPU now."""
    if num_gpus is not None:
        return num_gpus
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
