"""A worker node lost mid-job, as a spot node is preempted: labelling and training, timed.

The cluster is Ray's own multi-node test cluster on this machine
(``ray.cluster_utils.Cluster``): a head with 0 CPUs (the driver and the job's
counters live there) and `--workers` worker nodes of `--cpus` CPUs, each its own
raylet with its own object store and worker processes. Once the job is under way
(its CAM actors labelling for `--kill-after` seconds; for training, epoch 2
started, so epoch 1's checkpoint exists), the node that runs a CAM actor (a training worker) is removed
without warning: its raylet and every process on it are killed, and the objects in
its store are lost. A replacement node joins, as an autoscaler would start one.

Each job runs twice on a fresh cluster, without and with the node loss, and the
script prints what the fault table in docs/RESULTS.md reports: rows lost and
duplicated, the summary's retried batches, half-written files left, the time from
the kill to the job's end, and the whole job's time against the run without the kill.

    .venv/bin/python benchmarks/node_loss.py [--n 400] [--kill-after 5] [--workers 2] [--cpus 2]
"""

from __future__ import annotations

import argparse
import collections
import json
import socket
import tempfile
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


def lose_node_running(cluster: Cluster, class_part: str, cpus: int, after: float = 0.0) -> dict:
    """`after` seconds once an actor whose class name contains `class_part` is alive on a worker
    node, kill that node; a new node joins."""
    from ray.util.state import list_actors

    def victim():
        nodes = {a.node_id for a in list_actors(address=f"http://{cluster.webui_url}",
                                                filters=[("state", "=", "ALIVE")], limit=10_000)
                 if class_part in a.class_name and a.node_id}
        return next((n for n in cluster.worker_nodes if n.node_id in nodes), None)

    deadline = time.time() + 120
    while victim() is None:
        if time.time() > deadline:
            raise RuntimeError(f"no live {class_part} actor on a worker node")
        time.sleep(0.1)
    time.sleep(after)
    node = victim()
    if node is None:
        raise RuntimeError(f"the {class_part} actors finished before the node could be lost; label more images")
    killed = time.time()
    cluster.remove_node(node, allow_graceful=False)
    cluster.add_node(num_cpus=cpus)
    return {"killed_at": killed, "node": node.node_id}


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


def label(manifest: str, output: Path, cluster: Cluster, kill: bool, cpus: int, kill_after: float = 5.0) -> dict:
    """The labelling job (2 CAM actors), with or without losing the node of one of them."""
    from wsss_ray.config import LabelJobConfig
    from wsss_ray.files import is_temporary
    from wsss_ray.pipeline import run
    from wsss_ray.rows import read_output

    config = LabelJobConfig(input=manifest, output=str(output), batch_size=4, rows_per_file=8, concurrency=(2, 2))
    start = time.time()
    thread, out = _in_thread(lambda: run(config, progress_interval=3600))
    loss = None
    if kill:
        loss = lose_node_running(cluster, "CamStage", cpus, after=kill_after)
    thread.join()
    if "error" in out:
        raise out["error"]
    done = time.time()
    ids = read_output(str(output), ["id"]).column("id").to_pylist()
    counts = collections.Counter(ids)
    return {"summary": out["result"], "seconds": done - start, "ids": ids,
            "duplicated": sum(c - 1 for c in counts.values()),
            "temporaries": [p.name for p in output.iterdir() if is_temporary(p.name)],
            "kill_to_done": done - loss["killed_at"] if loss else None}


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
        loss = lose_node_running(cluster, "RayTrainWorker", cpus)
    thread.join()
    if "error" in out:
        raise out["error"]
    done = time.time()
    begun = [tuple(map(int, line.split())) for line in starts.read_text().splitlines()]
    return {"summary": out["result"], "seconds": done - start, "epoch_starts": begun,
            "kill_to_done": done - loss["killed_at"] if loss else None}


def _epoch_log(path: str):
    def hook(epoch: int, rank: int) -> None:
        with open(path, "a") as f:
            f.write(f"{epoch} {rank}\n")
        if epoch >= 2:
            time.sleep(1.0)  # epochs of a few images are short: leave room for the kill to land inside one
    return hook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400, help="toy-world images to label")
    parser.add_argument("--kill-after", type=float, default=5.0, help="seconds of labelling before the node goes")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of each worker node")
    args = parser.parse_args()
    from wsss_ray.toyworld import generate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = str(generate(root / "toy", args.n, seed=3_000_000))
        val = str(generate(root / "val", 8, seed=3_100_000))
        runs = {}
        for kill in (False, True):
            cluster = start_cluster(args.workers, args.cpus)
            try:
                runs["label", kill] = label(manifest, root / f"label-{kill}", cluster, kill, args.cpus,
                                            args.kill_after)
                runs["train", kill] = train(root / "label-False", val, root / f"train-{kill}", cluster, kill,
                                            args.cpus)
            finally:
                stop_cluster(cluster)
        print("| job | node lost | rows lost | rows duplicated | retried batches | half-written files | "
              "kill -> done, s | job, s | extra time, s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for (job, kill), r in runs.items():
            base = runs[job, False]
            after = "" if r["kill_to_done"] is None else f"{r['kill_to_done']:.1f}"
            cells = (f"{args.n - len(set(r['ids']))} | {r['duplicated']} | {r['summary']['retried_batches']} | "
                     f"{len(r['temporaries'])}" if job == "label" else "| | |")
            name = f"labelling, {args.n} images" if job == "label" else "training, 3 epochs"
            print(f"| {name} | {'yes' if kill else 'no'} | {cells} | {after} | {r['seconds']:.1f} | "
                  f"{r['seconds'] - base['seconds']:+.1f} |")
        print(json.dumps({f"{job} {'kill' if kill else 'no kill'}": {
            "epoch_starts": r.get("epoch_starts"), "summary": {k: v for k, v in r["summary"].items()
                                                               if k not in ("history",)}}
            for (job, kill), r in runs.items()}, default=str))


if __name__ == "__main__":
    main()
