"""A worker node lost mid-job, as a spot node is preempted: labelling and training.

The cluster is Ray's own multi-node test cluster on this machine
(``ray.cluster_utils.Cluster``): a head with 0 CPUs (the driver and the job's
counters live there) and worker nodes, each its own raylet with its own object
store and worker processes. Once the job is under way, a node is removed without
warning: its raylet and every process on it are killed, and the objects in its
store are lost. A replacement node joins, as an autoscaler would start one.

- Labelling (:func:`label`): each CAM actor holds its `nth` batch for `hold` seconds
  once the batch is labelled (as a GPU-sized batch would take), after writing its
  node's id to a marker file; the node of the first actor to do so is lost while the
  batch is held, so a batch is certainly in flight there, whatever the machine's load.
- Training (:func:`train`): the node of a training worker is lost 2 s into epoch 2,
  so epoch 1's checkpoint exists.

``tests/test_node_loss.py`` asserts on what these return; ``benchmarks/node_loss.py``
prints the fault table's timings.
"""

from __future__ import annotations

import collections
import os
import socket
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster


def start_cluster(workers: int, cpus: int) -> Cluster:
    ray.shutdown()  # a Ray this process had joined before (a test's, an implicit ray.init) would take the driver
    with socket.socket() as s:  # the state API needs a dashboard; not on 8265, which another Ray may hold
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": True,
                                                            "dashboard_port": port})
    for _ in range(workers):
        cluster.add_node(num_cpus=cpus)
    cluster.wait_for_nodes()
    cluster.connect()
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    ray.shutdown()
    cluster.shutdown()


def lose_node(cluster: Cluster, victims, cpus: int, what: str, job: threading.Thread) -> dict | None:
    """Kill the first worker node whose id `victims()` returns while `job` runs (None if it
    ended first, so the caller can raise its error); a new node joins. `what` names the
    awaited work in the error if none comes within 2 minutes."""
    deadline = time.time() + 120
    while (node := next((n for n in cluster.worker_nodes if n.node_id in victims()), None)) is None:
        if not job.is_alive():
            return None
        if time.time() > deadline:
            raise RuntimeError(f"no {what} on a worker node within 2 minutes")
        time.sleep(0.05)
    killed = time.time()
    cluster.remove_node(node, allow_graceful=False)
    cluster.add_node(num_cpus=cpus)
    loss = {"killed_at": killed, "node": node.node_id}

    def notice() -> None:  # how long Ray takes to mark the node dead
        while any(n["NodeID"] == node.node_id and n["Alive"] for n in ray.nodes()):
            time.sleep(0.2)
        loss["marked_dead_after"] = time.time() - killed

    threading.Thread(target=notice, daemon=True).start()
    return loss


def actor_nodes(cluster: Cluster, class_part: str):
    """The ids of the nodes with a live actor whose class name contains `class_part` (for :func:`lose_node`)."""
    from ray.util.state import list_actors

    return lambda: {a.node_id for a in list_actors(address=f"http://{cluster.webui_url}",
                                                   filters=[("state", "=", "ALIVE")], limit=10_000)
                    if class_part in a.class_name and a.node_id}


def marked_nodes(marks: Path):
    """The ids of the nodes that :func:`holding_cam_stage` actors marked (for :func:`lose_node`)."""
    return lambda: {p.name.split("-")[0] for p in marks.iterdir()}


def holding_cam_stage(marks: Path, hold: float, nth: int) -> type:
    """The job's CAM actor, but each actor holds its `nth` batch `hold` seconds once the batch is
    labelled and its attempt is on record, after marking its node in `marks` (``NODE-PID`` files)."""
    from wsss_ray.pipeline import CamStage

    class HoldingCamStage(CamStage):  # defined in a function, so Ray pickles it by value
        batches = 0

        def __call__(self, batch: dict) -> dict:
            batch = super().__call__(batch)
            self.batches += 1
            if self.batches == nth:
                (marks / f"{ray.get_runtime_context().get_node_id()}-{os.getpid()}").touch()
                time.sleep(hold)
            return batch

    return HoldingCamStage


def _in_thread(target) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def go():
        try:
            out["result"] = target()
        except BaseException as e:  # noqa: BLE001 - re-raised by the caller
            out["error"] = e

    thread = threading.Thread(target=go)
    thread.start()
    return thread, out


def label(manifest: str, output: Path, cluster: Cluster, kill: bool, cpus: int, hold: float = 2.0,
          nth: int = 3) -> dict:
    """The labelling job (2 CAM actors, each holding its `nth` batch `hold` s), with or without
    losing the node of the first actor to hold one, while it holds it."""
    from wsss_ray.store import is_temporary
    from wsss_ray.pipeline import run
    from wsss_ray.testing.settings import toy_job
    from wsss_ray.store import read_output

    marks = output.parent / f"{output.name}-marks"
    marks.mkdir()
    config = toy_job(input=manifest, output=str(output), batch_size=4, rows_per_file=8, concurrency=(2, 2))
    start = time.time()
    thread, out = _in_thread(lambda: run(config, cam_stage=holding_cam_stage(marks, hold, nth),
                                         progress_interval=3600))
    loss = lose_node(cluster, marked_nodes(marks), cpus, "CAM actor holding a batch", thread) if kill else None
    rows_at_kill = _rows(output) if kill else None
    thread.join()
    if "error" in out:
        raise out["error"]
    if kill and loss is None:
        raise RuntimeError("the job ended before a CAM actor held a batch; label more images")
    done = time.time()
    ids = read_output(str(output), ["id"]).column("id").to_pylist()
    counts = collections.Counter(ids)
    return {"summary": out["result"], "seconds": done - start, "ids": ids,
            "duplicated": sum(c - 1 for c in counts.values()),
            "temporaries": [p.name for p in output.iterdir() if is_temporary(p.name)],
            "kill_to_done": done - loss["killed_at"] if loss else None, "rows_at_kill": rows_at_kill,
            "marked_dead_after": loss and loss.get("marked_dead_after")}


def _rows(output: Path) -> int:
    """Rows written under `output` so far."""
    from wsss_ray.store import iter_output

    return sum(batch.num_rows for batch in iter_output(str(output), ["id"]))


def train(labelled: Path, val: str, output: Path, cluster: Cluster, kill: bool, cpus: int, epochs: int = 3) -> dict:
    """Training (2 DDP workers), with or without losing a worker's node during epoch 2."""
    from wsss_ray.config import TrainConfig
    from wsss_ray.train.trainer import run

    starts = output.parent / f"{output.name}-epochs.log"
    config = TrainConfig(input=str(labelled), val=val, output=str(output), batch_size=4, num_workers=2,
                         epochs=epochs)
    start = time.time()
    thread, out = _in_thread(lambda: run(config, epoch_hook=_epoch_log(str(starts))))
    loss = None
    if kill:
        while thread.is_alive() and "2 " not in (starts.read_text() if starts.exists() else ""):
            time.sleep(0.05)
        time.sleep(2)  # mid-epoch, after the controller has registered epoch 1's checkpoint
        loss = lose_node(cluster, actor_nodes(cluster, "RayTrainWorker"), cpus, "live training worker", thread)
    thread.join()
    if "error" in out:
        raise out["error"]
    if kill and loss is None:
        raise RuntimeError("training ended before its node could be lost; train more epochs")
    done = time.time()
    begun = [tuple(map(int, line.split())) for line in starts.read_text().splitlines()]
    return {"summary": out["result"], "seconds": done - start, "epoch_starts": begun,
            "kill_to_done": done - loss["killed_at"] if loss else None,
            "marked_dead_after": loss and loss.get("marked_dead_after")}


def _epoch_log(path: str):
    def hook(epoch: int, rank: int) -> None:
        with open(path, "a") as f:
            f.write(f"{epoch} {rank}\n")
        if epoch >= 2:
            time.sleep(1.0)  # epochs of a few images are short: leave room for the kill to land inside one
    return hook
