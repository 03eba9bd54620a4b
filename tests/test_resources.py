"""How every job decides GPU placement: the flag, GPUs now, or GPUs the autoscaler can start."""

import io
from types import SimpleNamespace

import pytest
import ray

from wsss_ray import resources
from wsss_ray.resources import config_gpus, gpus_per_holder, use_gpu


@pytest.fixture
def cluster(monkeypatch):
    """Set what the cluster has now and what its autoscaler can start."""
    def set_(gpus_now: float = 0, launchable: float = 0):
        monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0, **({"GPU": gpus_now} if gpus_now else {})})
        monkeypatch.setattr(resources, "autoscaler_gpus", lambda: (launchable, "cluster/test.yaml"))
    return set_


@pytest.mark.parametrize("requested, now, launchable, expected, reason", [
    (None, 0, 0, 0.0, "no GPU in the cluster and none its autoscaler can start (cluster/test.yaml)"),
    (None, 2, 0, 1.0, "the cluster has 2 GPU(s)"),
    (None, 0, 4, 1.0, "no GPU yet, but its autoscaler can start nodes with 4 GPU(s) in all (cluster/test.yaml)"),
    (0.0, 2, 4, 0.0, "--num-gpus given"),
    (0.5, 0, 0, 0.5, "--num-gpus given"),
])
def test_gpus_per_holder_decides_and_says_why(cluster, requested, now, launchable, expected, reason):
    cluster(now, launchable)
    out = io.StringIO()
    assert gpus_per_holder(requested, "pseudolabel", stream=out) == expected
    line = out.getvalue()
    assert line.startswith("[pseudolabel] CAM actors: ") and f"because {reason};" in line
    assert ("CPU only" in line) == (expected == 0) and "Override with --num-gpus." in line


def test_training_decides_the_same_way(cluster):
    cluster(0, 1)
    assert use_gpu(SimpleNamespace(use_gpu=None), "train") is True
    assert use_gpu(SimpleNamespace(use_gpu=False), "train") is False
    cluster(0, 0)
    assert use_gpu(SimpleNamespace(use_gpu=None), "train") is False
    assert use_gpu(SimpleNamespace(use_gpu=True), "train") is True


def test_config_gpus_counts_gpu_node_types_up_to_their_max_workers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("max_workers: 10\navailable_node_types:\n"
                    "  head: {resources: {CPU: 0}, max_workers: 0}\n"
                    "  cpu: {resources: {CPU: 8}, max_workers: 5}\n"
                    "  gpu: {resources: {CPU: 8, GPU: 4}, max_workers: 2}\n"
                    "  gpu1: {resources: {GPU: 1}}\n")  # no max_workers: the cluster's
    assert config_gpus(str(path)) == 4 * 2 + 1 * 10


def test_the_monitor_config_is_read_from_the_v1_monitor_command_line(monkeypatch, tmp_path):
    proc = tmp_path / "proc" / "4242"
    proc.mkdir(parents=True)
    (proc / "cmdline").write_bytes(b"\0".join([b"python", b"-u", b"/x/ray/autoscaler/_private/monitor.py",
                                               b"--logs-dir=/tmp", b"--autoscaling-config=/etc/ray/c.yaml", b""]))
    other = tmp_path / "proc" / "7"
    other.mkdir()
    (other / "cmdline").write_bytes(b"python\0--autoscaling-config=/not/this.yaml\0")
    assert resources.monitor_config_path(tmp_path / "proc") == "/etc/ray/c.yaml"
    assert resources.monitor_config_path(tmp_path / "nothing") is None


@pytest.mark.parametrize("cpus, holders, expected", [
    (8.0, 1, (1.0, 1.0)), (2.0, 1, (1.0, 1.0)), (1.0, 1, (0.5, 0.5)), (0.0, 1, (1.0, 1.0)),
    (2.0, 2, (0.5, 1.0)),  # two holders on 2 CPUs: one CPU left whole for tasks (Ray Data's reads want 1)
])
def test_cpu_requests_fit_small_clusters_and_leave_empty_ones_to_the_autoscaler(monkeypatch, cpus, holders, expected):
    from wsss_ray.resources import fit_cpus

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": cpus} if cpus else {})
    assert fit_cpus(holders, 1.0, "test") == expected


def test_blocks_are_a_file_for_large_collections_and_smaller_so_every_actor_gets_some():
    from wsss_ray.store.writer import block_rows

    assert block_rows(10_000_000, 16, 4096, holders=4) == 4096   # few blocks: the driver's cost is per block
    assert block_rows(200, 16, 4096, holders=1) == 50            # about four blocks per actor
    assert block_rows(1_000, 16, 4096, holders=4) == 63
    assert block_rows(20, 16, 4096, holders=4) == 16             # never below one batch
