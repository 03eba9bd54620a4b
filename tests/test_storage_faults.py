"""Object-store faults against moto behind a faulty proxy (tests/s3_faults.py): transient
errors are retried until they succeed, permanent ones fail at once with one sentence."""

import boto3
import pytest

from wsss_ray.testing.s3 import FaultyS3
from wsss_ray.store.claim import OutputClaim, OutputUnwritable, check_output, read_claims
from wsss_ray.store import atomic_write, filesystem, read_bytes
from wsss_ray.testing.settings import toy_job

pytestmark = pytest.mark.slow


def test_transient_errors_are_retried_until_the_request_succeeds(moto_s3, monkeypatch):
    moto, bucket = moto_s3
    with FaultyS3(moto, transient=4) as proxy:  # 503 SlowDown, reset, 503, reset, then through
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        atomic_write(f"s3://{bucket}/out/a.bin", b"labels")
        assert read_bytes(f"s3://{bucket}/out/a.bin") == b"labels"
        assert proxy.injected["slow_down"] > 0 and proxy.injected["reset"] > 0
        assert {m for m, _ in proxy.seen} >= {"PUT", "GET", "HEAD"}  # writes, reads and lookups all met faults


def test_a_missing_bucket_fails_the_claim_at_once_with_one_sentence(moto_s3, monkeypatch):
    moto, bucket = moto_s3
    with FaultyS3(moto) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        with pytest.raises(OutputUnwritable, match=r"cannot write to the output s3://nope/out: .*check the path or "
                                                   r"bucket name and that these credentials may write there"):
            with OutputClaim("s3://nope/out", "run"):
                pass
        with pytest.raises(OutputUnwritable, match="cannot write to the output s3://nope/out"):
            check_output("s3://nope/out")  # what the jobs call before Ray starts
        assert sum(proxy.seen.values()) <= 8, proxy.seen  # both calls: a few lookups, no retries (10 a request)


def test_credentials_that_may_not_write_fail_the_claim_at_once(moto_s3, monkeypatch):
    moto, bucket = moto_s3
    with FaultyS3(moto, deny_writes=True) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        with pytest.raises(OutputUnwritable, match=f"cannot write to the output s3://{bucket}/out: .*ACCESS_DENIED"):
            with OutputClaim(f"s3://{bucket}/out", "run"):
                pass
        assert proxy.injected["denied"] >= 1 and sum(proxy.seen.values()) <= 4, proxy.seen
        assert read_claims(f"s3://{bucket}/out") == []


def test_claims_on_object_storage_refuse_a_second_run_and_take_over_a_stale_one(moto_s3, monkeypatch):
    moto, bucket = moto_s3
    import json
    import time

    from wsss_ray.store import OutputBusy

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto)
    with OutputClaim(f"s3://{bucket}/out", "first"):
        with pytest.raises(OutputBusy, match="is being written by run first"):
            with OutputClaim(f"s3://{bucket}/out", "second"):
                pass
    stale = {"run_id": "lost", "host": "spot-node", "pid": 7, "started": time.time() - 600, "took_over": []}
    fs, path = filesystem(f"s3://{bucket}/out/_claim-lost.json")
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(stale).encode())
    with pytest.raises(OutputBusy, match="is being written by run lost"):  # just written: live
        with OutputClaim(f"s3://{bucket}/out", "third", ttl=30):
            pass
    time.sleep(2.5)  # S3 keeps modification times in whole seconds: over 1 s old by the store's clock
    with OutputClaim(f"s3://{bucket}/out", "third", ttl=1, grace=0) as claim:
        assert claim.took_over == ["lost"] and [c.run_id for c in read_claims(f"s3://{bucket}/out")] == ["third"]


def test_the_labelling_job_on_a_flaky_store_writes_every_id_exactly_once(moto_s3, monkeypatch, tmp_path):
    """Input and output on S3, every request failing twice first: the job finishes as if nothing happened."""
    import ray

    from wsss_ray.pipeline import run
    from wsss_ray.store import read_output
    from wsss_ray.toyworld import generate

    moto, bucket = moto_s3
    local = generate(tmp_path / "toy", 6, seed=2_000_800).parent
    client = boto3.client("s3", endpoint_url=moto)
    for path in local.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, f"collection/{path.relative_to(local)}")
    with FaultyS3(moto, transient=2) as proxy:
        env = {"AWS_ENDPOINT_URL": proxy.url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_REGION": "us-east-1"}
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        ray.shutdown()  # the session's Ray, if it runs: this job's workers need the proxy in their environment
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": env})
        try:
            summary = run(toy_job(input=f"s3://{bucket}/collection/manifest.jsonl",
                                         output=f"s3://{bucket}/out", batch_size=3))
        finally:
            ray.shutdown()
        assert proxy.injected["slow_down"] + proxy.injected["reset"] >= 10
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto)
    assert (summary["rows"], summary["ok"], summary["errors"]) == (6, 6, 0) and summary["miou"] > 0
    ids = read_output(f"s3://{bucket}/out", ["id"]).column("id").to_pylist()
    assert sorted(ids) == [f"toy{2_000_800 + i:07d}" for i in range(6)]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]]
    assert all(k.startswith("out/part-") for k in keys if k != "out/"), keys  # no claim, no temporary left
