"""Scale-up and scale-down times of the pseudolabel job on the fake autoscaling cluster.

Starts ``cluster/local.yaml`` (Ray's fake_multinode provider: a head with 0 CPUs,
worker "nodes" that are extra raylets on this machine, min 0: a CPU type and a type
with one fake GPU), submits the job without ``--num-gpus`` with ``ray job submit
--no-wait``, and times from the moment the submission is accepted: -> first worker
node alive, -> job finished, and job finished -> no worker node left. It records
which nodes the CAM actors ran on (their GPUs) and the job's placement line. Its GCS must listen on the default
port 6379 (the fake provider's nodes join there); the teardown stops only the
processes of that cluster, not other Ray instances on the machine.

    .venv/bin/python benchmarks/fake_cluster_scaling.py [--n 24]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from wsss_ray.testing.fake_cluster import scale_cycle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = scale_cycle(Path(tmp), args.n)
    print(f"fake cluster (cluster/local.yaml: head CPU 0, CPU workers of 2 CPUs and a GPU worker of 1 CPU + 1 fake "
          f"GPU, all min 0, idle timeout 0.2 min), "
          f"{args.n} toy images, job {r['status']}, rows {r['summary'] and r['summary']['rows']}")
    print("| step | seconds |\n|---|---|")
    print(f"| submit -> first worker node alive (scale-up) | {r['scale_up_s']} |")
    print(f"| submit -> job finished | {r['job_s']} |")
    print(f"| job finished -> no worker node left (scale-down) | {r['scale_down_s']} |")
    print(f"workers: {r['workers_before']} before, {r['workers_at_peak']} at most during the job; "
          f"GPU nodes started: {r['gpu_nodes_seen']}; GPUs of the CAM actors' nodes: {r['cam_actor_node_gpus']}")
    print(next((line for line in r["logs"].splitlines() if "CAM actors:" in line), "(no placement line)"))


if __name__ == "__main__":
    main()
