"""A worker node lost mid-job (spot preemption) on a multi-node cluster on this machine:
the scenario ``wsss_ray.testing.node_loss`` (benchmarks/node_loss.py prints its timings)."""

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def node_loss():
    from wsss_ray.testing import node_loss

    return node_loss


@pytest.fixture(scope="module")
def cluster(node_loss):
    cluster = node_loss.start_cluster(workers=2, cpus=2)
    yield cluster
    node_loss.stop_cluster(cluster)


@pytest.fixture(scope="module")
def labelled(node_loss, cluster, tmp_path_factory):
    from wsss_ray.toyworld import generate

    root = tmp_path_factory.mktemp("node-loss")
    manifest = generate(root / "toy", 96, seed=3_000_000)
    return root, node_loss.label(str(manifest), root / "out", cluster, kill=True, cpus=2)


def test_labelling_loses_a_cam_actor_node_and_writes_every_id_exactly_once(labelled):
    root, r = labelled
    expected = sorted(f"toy{3_000_000 + i:07d}" for i in range(96))
    assert sorted(set(r["ids"])) == expected and r["duplicated"] == 0
    assert (r["summary"]["rows"], r["summary"]["ok"], r["summary"]["errors"]) == (96, 96, 0)
    assert r["summary"]["retried_batches"] >= 1  # the batch held on the lost node at least, said in the summary
    assert r["temporaries"] == [] and r["rows_at_kill"] < 96  # the node went while the job had rows to write


def test_training_loses_a_worker_node_and_resumes_from_the_last_checkpoint(node_loss, cluster, labelled):
    from wsss_ray.toyworld import generate

    root, _ = labelled
    val = generate(root / "val", 8, seed=3_100_000)
    r = node_loss.train(root / "out", str(val), root / "train", cluster, kill=True, cpus=2)
    assert r["summary"]["epochs"] == 3
    starts = r["epoch_starts"]
    assert starts.count((1, 0)) == 1, starts  # epoch 1 trained once: its checkpoint survived the node
    assert starts.count((2, 0)) == 2, starts  # epoch 2 began, lost a worker with the node, began again
    assert starts.count((3, 0)) == 1, starts
