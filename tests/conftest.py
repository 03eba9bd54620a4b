"""Shared fixtures: a randomly initialised toyclip-architecture model, saved and reloaded.

Everything runs on CPU and offline; no fixture sets HF_HUB_OFFLINE (test_clip checks the
fast-fail path without it).
"""

import uuid

import numpy as np
import pytest
import torch

from wsss_ray.testing.s3 import CREDENTIALS, moto_server

from wsss_ray.clip import load_clip
from wsss_ray.toyworld.toyclip import create_toyclip, save_local_dir


@pytest.fixture(scope="session")
def tiny_model():
    """A randomly initialised toyclip (64 px, 8 px patches, width 128, 4 blocks), eval mode."""
    torch.manual_seed(0)
    return create_toyclip().eval()


@pytest.fixture(scope="session")
def tiny_dir(tiny_model, tmp_path_factory):
    """`tiny_model` written as an open_clip local-dir folder (fp16 weights)."""
    return save_local_dir(tiny_model, tmp_path_factory.mktemp("tinyclip"))


@pytest.fixture(scope="session")
def tiny_clip(tiny_dir):
    """LoadedClip of the saved random model (model, preprocess, tokenizer, mean, std)."""
    return load_clip(f"local-dir:{tiny_dir}")


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance on 2 CPUs for one test module."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def moto_s3(monkeypatch):
    """A moto S3 server on loopback and a bucket of this test's own: (url, bucket).

    The credentials are set in the environment; AWS_ENDPOINT_URL is left to the test,
    which points it at the server or at a faulty proxy in front of it.
    """
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    with moto_server(bucket) as url:
        yield url, bucket
