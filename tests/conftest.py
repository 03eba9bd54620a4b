"""Shared fixtures: a randomly initialised toyclip-architecture model, saved and reloaded.

Everything runs on CPU and offline; no fixture sets HF_HUB_OFFLINE (test_clip checks the
fast-fail path without it).
"""

import os
import shutil
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


@pytest.fixture(scope="session")
def _ray_session():
    """Shuts down the session's shared Ray at the end (see `ray_local`)."""
    yield
    import ray

    ray.shutdown()


@pytest.fixture(scope="module")
def ray_local(_ray_session) -> str:
    """The test session's local Ray on 2 CPUs, shared by every module that takes it; its GCS address.

    Starting Ray costs seconds of both cores (its head processes, then workers that import
    torch), so one instance serves the session and its idle workers serve the next module. A
    test that needs Ray of its own (other settings, a cluster of several nodes) shuts this one
    down first; the next module that takes this fixture starts it again.
    """
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    return ray.get_runtime_context().gcs_address


@pytest.fixture
def ray_env(ray_local) -> dict[str, str]:
    """The environment of a job run as a subprocess: it joins the session's Ray (`ray_local`)
    as one more driver instead of starting an instance of its own."""
    return {**os.environ, "RAY_ADDRESS": ray_local}


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory):
    """An empty MLflow sqlite store with its tables made: MLflow's migrations take seconds per store."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_uri(_mlflow_template, tmp_path) -> str:
    """A new, empty MLflow store of this test's own (a copy of the session's template): its URI."""
    shutil.copyfile(_mlflow_template, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path}/mlflow.db"


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

