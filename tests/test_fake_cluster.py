"""The pseudolabel job on the fake autoscaling cluster of cluster/local.yaml.

The head has 0 CPUs and both worker types (CPU, and one fake GPU) min 0, so the
job's tasks make the autoscaler start CPU nodes and its CAM actors (which ask for a
GPU by default, as the autoscaler can start one) a GPU node; after the idle timeout
they go away again. The
scenario is ``wsss_ray.testing.fake_cluster`` (benchmarks/fake_cluster_scaling.py prints its timings). The
cluster's GCS takes the default port 6379, so no `ray start`ed cluster may be
running on this machine meanwhile.
"""

import pyarrow.dataset as pads
import pytest

from wsss_ray.testing.fake_cluster import scale_cycle

pytestmark = pytest.mark.slow


def test_job_scales_workers_up_and_back_down(tmp_path):
    r = scale_cycle(tmp_path, n=12)
    assert r["status"] == "SUCCEEDED", r["logs"][-3000:]
    assert r["workers_before"] == 0 and r["workers_at_peak"] >= 1
    assert (r["summary"]["rows"], r["summary"]["ok"]) == (12, 12)
    assert pads.dataset(r["output"], format="parquet").to_table().num_rows == 12
    # Up from none, then gone again while the cluster still runs: the autoscaler removed the idle nodes
    # (the scenario fails with a TimeoutError when that does not happen within its timeout).
    assert r["workers_after"] == 0
    # Submitted without --num-gpus: the GPU type is started from zero and every CAM actor runs there.
    assert "CAM actors: 1 GPU each, because no GPU yet, but its autoscaler can start" in r["logs"]
    assert r["gpu_nodes_seen"] == 1 and r["cam_actor_node_gpus"] and set(r["cam_actor_node_gpus"]) == {1.0}
