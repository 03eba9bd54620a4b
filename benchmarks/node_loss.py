"""A worker node lost mid-job, as a spot node is preempted: labelling and training, timed.

The cluster is Ray's own multi-node test cluster on this machine
(``ray.cluster_utils.Cluster``): a head with 0 CPUs (the driver and the job's
counters live there) and `--workers` worker nodes of `--cpus` CPUs, each its own
raylet with its own object store and worker processes. Once the job is under way,
a node is removed without warning: its raylet and every process on it are killed,
and the objects in its store are lost. A replacement node joins, as an autoscaler
would start one.

- Labelling: each CAM actor holds its `--nth` batch for `--hold` seconds once the
  batch is labelled (as a GPU-sized batch would take), after writing its node's id
  to a marker file; the node of the first actor to do so is lost while the batch is
  held, so a batch is certainly in flight there, whatever the machine's load. Both
  runs hold the batches, so they compare like with like.
- Training: the node of a training worker is lost 2 s into epoch 2, so epoch 1's
  checkpoint exists.

Each job runs twice on a fresh cluster, without and with the node loss, and the
script prints what the fault table in docs/RESULTS.md reports: rows lost and
duplicated, the summary's retried batches, half-written files left, the time from
the kill to the job's end, and the whole job's time against the run without the kill.

    .venv/bin/python benchmarks/node_loss.py [--n 400] [--hold 2] [--workers 2] [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


from wsss_ray.testing.node_loss import label, start_cluster, stop_cluster, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400, help="toy-world images to label")
    parser.add_argument("--hold", type=float, default=2.0, help="seconds each CAM actor holds its --nth batch")
    parser.add_argument("--nth", type=int, default=3, help="the batch each CAM actor holds")
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
                                            args.hold, args.nth)
                runs["train", kill] = train(root / "label-False", val, root / f"train-{kill}", cluster, kill,
                                            args.cpus)
            finally:
                stop_cluster(cluster)
        print("| job | node lost | rows lost | rows duplicated | retried batches | half-written files | "
              "kill -> node marked dead, s | kill -> done, s | job, s | extra time, s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for job, kill in sorted(runs):
            r, base = runs[job, kill], runs[job, False]
            after = " | ".join("" if r[k] is None else f"{r[k]:.1f}" for k in ("marked_dead_after", "kill_to_done"))
            cells = (f"{args.n - len(set(r['ids']))} | {r['duplicated']} | {r['summary']['retried_batches']} | "
                     f"{len(r['temporaries'])}" if job == "label" else "| | |")
            name = f"labelling, {args.n} images" if job == "label" else "training, 3 epochs"
            extra = f"{r['seconds'] - base['seconds']:+.1f}" if kill else ""
            print(f"| {name} | {'yes' if kill else 'no'} | {cells} | {after} | {r['seconds']:.1f} | {extra} |")
        print(json.dumps({f"{job} {'kill' if kill else 'no kill'}": {
            "epoch_starts": r.get("epoch_starts"), "summary": {k: v for k, v in r["summary"].items()
                                                               if k not in ("history",)}}
            for (job, kill), r in runs.items()}, default=str))


if __name__ == "__main__":
    main()
