"""Scenarios the tests and the benchmarks share, so neither imports the other.

    loopback.py      free ports on 127.0.0.1
    s3.py            moto S3 on loopback, and a proxy in front of it that fails on purpose
    processes.py     a process and everything it started (Ray starts some in sessions of their own)
    waits.py         waiting on an event instead of sleeping a fixed time
    gates.py         jobs held at a known point, so that a kill lands part-way on any machine
    degraded.py      CAM-like CRF inputs from photos with ground truth (the ground truth, degraded)
    node_loss.py     a worker node lost mid-job on a multi-node cluster on this machine
    fake_cluster.py  the labelling job on the fake autoscaling cluster of cluster/local.yaml
    outputs.py       small labelling-job outputs with known masks, written directly
    settings.py      the labelling settings toyclip runs with in the tests (its own, method excel)

A test asserts on what a scenario returns; a benchmark (``benchmarks/``) prints its timings.
"""
