"""Input read from and output written to an S3-compatible server (moto) on loopback.

pyarrow's S3 filesystem honours ``AWS_ENDPOINT_URL``, so the job sees plain
``s3://`` URIs exactly as it would on AWS.
"""

import os

import boto3
import pytest
import ray

from wsss_ray.testing.s3 import CREDENTIALS
from wsss_ray.store import read_output
from wsss_ray.pipeline import run
from wsss_ray.toyworld import generate
from wsss_ray.testing.settings import toy_job

pytestmark = pytest.mark.slow


@pytest.fixture
def s3(moto_s3, monkeypatch):
    """moto with the job's environment: (bucket, the variables a Ray worker needs)."""
    url, bucket = moto_s3
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    return bucket, {**CREDENTIALS, "AWS_ENDPOINT_URL": url}


def test_pipeline_reads_and_writes_s3(s3, tmp_path):
    bucket, env = s3
    local = generate(tmp_path / "toy", 6, seed=2_000_600).parent
    client = boto3.client("s3")
    for path in local.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, f"collection/{path.relative_to(local)}")
    ray.shutdown()  # the session's Ray, if it runs: this job's workers need the S3 settings in their environment
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    try:
        config = toy_job(input=f"s3://{bucket}/collection/manifest.jsonl", output=f"s3://{bucket}/out",
                                batch_size=3)
        summary = run(config)
        again = run(config)
    finally:
        ray.shutdown()
    assert (summary["rows"], summary["ok"], summary["errors"]) == (6, 6, 0)
    assert summary["miou"] is not None and summary["miou"] > 0
    assert (again["rows"], again["skipped"]) == (0, 6)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]]
    assert keys and all(k.startswith("out/part-") and k.endswith(".parquet") for k in keys if k != "out/")
    table = read_output(f"s3://{bucket}/out", ["id", "image", "status"])
    assert sorted(table.column("id").to_pylist()) == [f"toy{2_000_600 + i:07d}" for i in range(6)]
    assert all(i.startswith(f"s3://{bucket}/collection/images/") for i in table.column("image").to_pylist())


def test_local_file_copies_a_remote_file_for_the_block_and_leaves_a_local_path_alone(s3, tmp_path):
    from wsss_ray.store import local_file

    bucket, _ = s3
    boto3.client("s3").put_object(Bucket=bucket, Key="runs/best/model.pt", Body=b"checkpoint bytes")
    with local_file(f"s3://{bucket}/runs/best/model.pt") as copy:
        assert copy.endswith("/model.pt") and not copy.startswith("s3://")
        assert open(copy, "rb").read() == b"checkpoint bytes"
    assert not os.path.exists(os.path.dirname(copy))  # the temporary copy is gone with the block
    here = tmp_path / "model.pt"
    here.write_bytes(b"local bytes")
    with local_file(str(here)) as same:
        assert same == str(here)
    assert here.read_bytes() == b"local bytes"  # a local file is used as it is, and kept
