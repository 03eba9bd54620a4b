"""Static checks of cluster/: no cluster is started and nothing is reached over the network.

- The launcher YAMLs (aws, gcp) go through what `ray up` runs before it calls the cloud:
  ``prepare_config`` (defaults merge, setup-command merge, docker check, per-type worker bounds)
  and ``validate_config`` (Ray's ``ray-schema.json`` plus its cross-field checks).
- ``local.yaml`` is read as it is by the autoscaler (``StandardAutoscaler.reset`` runs only
  ``validate_config``; fake_multinode has no defaults file in the 2.60 wheel), so it must validate raw
  and hold every key of a fully spelled-out config.
- The KubeRay manifests go through ``_derive_autoscaling_config_from_ray_cr``, the function that the
  autoscaler sidecar uses to turn a RayCluster into its config. It validates the result too.
- Every config is asked, through the autoscaler's own bin-packing (``get_nodes_for``), which node
  types it would start for the pipeline's resource requests: CAM actors {CPU: 1, GPU: 1} and
  decode/CRF tasks {CPU: 1}.

These use ``ray.autoscaler._private`` functions. pyproject pins ray to 2.60.x, where they exist.
"""

from __future__ import annotations

import copy
import importlib.util
import shlex
import tomllib
from functools import partial
from pathlib import Path

import pytest
import ray
import yaml
from packaging.requirements import Requirement
from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
from ray.autoscaler._private.monitor import BASE_READONLY_CONFIG
from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
from ray.autoscaler._private.providers import _get_default_config
from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer, get_nodes_for
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.runtime_env import RuntimeEnv

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHER = ["aws", "gcp"]

# The pipeline's resource requests (wsss_ray/pipeline.py): CAM actors with --num-gpus 1, and the
# decode / dense-CRF tasks.
CAM_ACTOR = {"CPU": 1, "GPU": 1}
CPU_TASK = {"CPU": 1}


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def load_kuberay(name: str) -> dict:
    docs = [d for d in yaml.safe_load_all((CLUSTER / "kuberay" / name).read_text()) if d is not None]
    assert len(docs) == 1, f"{name}: expected one manifest, found {len(docs)}"
    return docs[0]


def pyproject_requirements() -> dict[str, Requirement]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {Requirement(d).name: Requirement(d) for d in deps}


def is_gpu_type(node_type: dict) -> bool:
    return node_type.get("resources", {}).get("GPU", 0) > 0


def commands(cfg: dict, key: str) -> str:
    return "\n".join(cfg.get(key, []))


def plan(cfg: dict, demands: list[dict]) -> tuple[dict, list]:
    """Node types (and how many of each) the autoscaler would start for `demands` on an idle cluster."""
    scorer = partial(_default_utilization_scorer, node_availability_summary=NodeAvailabilitySummary({}))
    to_add, unfulfilled = get_nodes_for(cfg["available_node_types"], {cfg["head_node_type"]: 1},
                                        cfg["head_node_type"], cfg["max_workers"], demands, scorer)
    return dict(to_add), unfulfilled


# --- Ray cluster launcher: aws.yaml, gcp.yaml ------------------------------------------------------

@pytest.fixture(scope="module", params=LAUNCHER)
def launcher(request) -> tuple[str, dict]:
    return request.param, load(f"{request.param}.yaml")


def test_launcher_config_passes_ray_up_validation(launcher):
    name, cfg = launcher
    validate_config(cfg)                         # the file as written
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)                    # after the defaults merge, as `ray up` checks it
    assert prepared["provider"]["type"] == name


def test_launcher_config_sets_every_default_key(launcher):
    """No key is left to the provider's defaults.yaml, whose setup_commands install a Ray dev wheel."""
    _, cfg = launcher
    missing = set(_get_default_config(cfg["provider"])) - set(cfg)
    assert not missing, f"left to Ray's defaults: {sorted(missing)}"


def test_launcher_node_types_fit_the_pipeline(launcher):
    name, cfg = launcher
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "the head must advertise CPU 0 so that tasks land on workers"
    assert not is_gpu_type(head)
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    gpu = {k: v for k, v in workers.items() if is_gpu_type(v)}
    cpu = {k: v for k, v in workers.items() if not is_gpu_type(v) and v["resources"].get("CPU", 0) >= 1}
    assert gpu, "no GPU worker type"
    assert cpu, "no CPU worker type for decode/CRF"
    for k, v in workers.items():
        assert v.get("min_workers", 0) == 0, f"{k} must scale from 0"
        assert v.get("max_workers", 0) >= 1, f"{k} can never start"
    for k, v in gpu.items():
        assert v["resources"]["CPU"] >= CAM_ACTOR["CPU"], f"{k} has no CPU for a CAM actor"
    assert cfg["max_workers"] >= max(v["max_workers"] for v in workers.values())
    assert cfg["idle_timeout_minutes"] > 0
    if name == "gcp":
        for k, v in gpu.items():
            nc = v["node_config"]
            assert nc["guestAccelerators"][0]["acceleratorCount"] == v["resources"]["GPU"], k
            assert {"onHostMaintenance": "TERMINATE"} in (nc.get("scheduling") or []), k


def test_launcher_autoscaler_starts_the_right_node_types(launcher):
    _, cfg = launcher
    cfg = prepare_config(copy.deepcopy(cfg))
    types = cfg["available_node_types"]
    gpu_types = {k for k, v in types.items() if is_gpu_type(v)}

    to_add, unfulfilled = plan(cfg, [CAM_ACTOR] * 4)           # --num-gpus 1 --concurrency 1,4
    assert not unfulfilled and to_add and set(to_add) <= gpu_types, to_add

    to_add, unfulfilled = plan(cfg, [CPU_TASK] * 32)           # decode/CRF burst
    assert not unfulfilled and to_add, to_add
    assert not set(to_add) & gpu_types, f"CPU tasks started GPU nodes: {to_add}"
    assert cfg["head_node_type"] not in to_add

    to_add, unfulfilled = plan(cfg, [CAM_ACTOR] * 2)           # Ray Train --num-workers 2 --use-gpu
    assert not unfulfilled and set(to_add) <= gpu_types, to_add


def test_launcher_installs_the_project(launcher):
    _, cfg = launcher
    req = pyproject_requirements()
    setup = commands(cfg, "setup_commands")
    pins = f"torch{req['torch'].specifier} torchvision{req['torchvision'].specifier}"
    assert f"pip install {pins}" in setup, "setup_commands must install pyproject's torch pins"
    assert "pip install -e ~/wsss-ray" in setup
    assert cfg["file_mounts"].get("~/wsss-ray") == ".", "the project folder must be synced to ~/wsss-ray"
    assert ".venv" in cfg["rsync_exclude"]


def test_launcher_start_commands(launcher):
    _, cfg = launcher
    head = commands(cfg, "head_start_ray_commands")
    worker = commands(cfg, "worker_start_ray_commands")
    assert "ray start --head" in head
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "--dashboard-host=0.0.0.0" in head
    assert "--address=$RAY_HEAD_IP:6379" in worker
    for cmds in (head, worker):
        assert cmds.splitlines()[0] == "ray stop"
        assert "export RAY_AUTH_MODE=token" in cmds, "token auth must be on for every node"
    assert "~/.ray/auth_token" in cfg["file_mounts"].values(), "the client's token must reach the nodes"


def test_launcher_images_are_python311_and_this_ray(launcher):
    _, cfg = launcher
    images = [cfg["docker"]["image"]] + [v["docker"]["worker_image"] for v in cfg["available_node_types"].values()
                                         if "worker_image" in v.get("docker", {})]
    for image in images:
        assert image.startswith(f"rayproject/ray:{ray.__version__}-py311"), image
    for k, v in cfg["available_node_types"].items():
        if is_gpu_type(v):
            assert v["docker"]["worker_image"].endswith("-gpu"), k


# --- local.yaml: the fake multi-node cluster ---------------------------------------------------------

def test_local_config_is_readable_by_the_autoscaler():
    cfg = load("local.yaml")
    validate_config(cfg)
    missing = set(BASE_READONLY_CONFIG) - set(cfg)
    assert not missing, f"the autoscaler reads these keys without defaults: {sorted(missing)}"


def test_local_config_is_a_fake_cluster_with_an_empty_head():
    cfg = load("local.yaml")
    assert cfg["provider"]["type"] == "fake_multinode"
    assert cfg["provider"]["use_node_id_as_ip"] is True
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"] == {"CPU": 0}
    worker = types["ray.worker.cpu"]
    assert worker["min_workers"] == 0
    assert 1 <= worker["max_workers"] <= cfg["max_workers"]
    assert worker["resources"]["CPU"] >= 1
    assert worker["resources"]["object_store_memory"] >= 100_000_000
    assert 0 < cfg["idle_timeout_minutes"] <= 1, "tests want scale-down within seconds"

    to_add, unfulfilled = plan(cfg, [CPU_TASK] * 3)
    assert not unfulfilled and to_add == {"ray.worker.cpu": 2}


def test_local_config_has_a_fake_gpu_type_from_zero_that_cam_actors_fill():
    cfg = load("local.yaml")
    gpu = cfg["available_node_types"]["ray.worker.gpu"]
    assert gpu["min_workers"] == 0 and gpu["resources"]["GPU"] == 1
    to_add, unfulfilled = plan(cfg, [CAM_ACTOR])
    assert not unfulfilled and to_add == {"ray.worker.gpu": 1}
    # the CAM actor fills the GPU node, so a CPU task beside it needs a CPU node
    assert gpu["resources"]["CPU"] == CAM_ACTOR["CPU"]


@pytest.mark.parametrize("name, gpus", [("local.yaml", 1), ("aws.yaml", None), ("gcp.yaml", None)])
def test_the_job_reads_how_many_gpus_a_cluster_config_can_start(name, gpus):
    from wsss_ray.resources import config_gpus

    cfg = load(name)
    expected = sum(v.get("resources", {}).get("GPU", 0) * v.get("max_workers", 0)
                   for v in cfg["available_node_types"].values())
    assert config_gpus(str(CLUSTER / name)) == expected >= 1
    if gpus is not None:
        assert expected == gpus


# --- KubeRay ------------------------------------------------------------------------------------------

# Fields of the ray.io/v1 types (KubeRay ray-operator/apis/ray/v1, 1.5+): a typo would only be
# caught by the API server at `kubectl apply`.
RAYCLUSTER_SPEC = {"upgradeStrategy", "authOptions", "suspend", "managedBy", "autoscalerOptions",
                   "headServiceAnnotations", "enableInTreeAutoscaling", "gcsFaultToleranceOptions",
                   "historyServerOptions", "networkPolicy", "tlsOptions", "headGroupSpec", "rayVersion",
                   "workerGroupSpecs"}
HEAD_GROUP = {"template", "headService", "enableIngress", "ingressOptions", "resources", "labels",
              "rayStartParams", "serviceType"}
WORKER_GROUP = {"suspend", "groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds",
                "priority", "resources", "labels", "rayStartParams", "template", "scaleStrategy", "numOfHosts"}
AUTOSCALER_OPTIONS = {"resources", "image", "imagePullPolicy", "securityContext", "idleTimeoutSeconds",
                      "upscalingMode", "version", "env", "envFrom", "volumeMounts", "command", "args"}
RAYJOB_SPEC = {"activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
               "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy", "entrypoint",
               "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus",
               "entrypointNumGpus", "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend"}


@pytest.fixture(scope="module")
def raycluster() -> dict:
    return load_kuberay("raycluster.yaml")


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return load_kuberay("rayjob.yaml")


@pytest.fixture(scope="module")
def runtime_env() -> dict:
    return yaml.safe_load((CLUSTER / "kuberay" / "runtime_env.yaml").read_text())


def cluster_specs(raycluster, rayjob):
    return [("raycluster.yaml", raycluster["spec"]), ("rayjob.yaml", rayjob["spec"]["rayClusterSpec"])]


def gpu_limit(group: dict) -> int:
    return int(group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
               .get("nvidia.com/gpu", 0))


def test_kuberay_kinds(raycluster, rayjob):
    assert raycluster["apiVersion"] == rayjob["apiVersion"] == "ray.io/v1"
    assert raycluster["kind"] == "RayCluster"
    assert rayjob["kind"] == "RayJob"
    assert not set(rayjob["spec"]) - RAYJOB_SPEC, set(rayjob["spec"]) - RAYJOB_SPEC


def test_kuberay_fields_are_known(raycluster, rayjob):
    for name, spec in cluster_specs(raycluster, rayjob):
        assert not set(spec) - RAYCLUSTER_SPEC, (name, set(spec) - RAYCLUSTER_SPEC)
        assert not set(spec["headGroupSpec"]) - HEAD_GROUP, name
        assert not set(spec.get("autoscalerOptions", {})) - AUTOSCALER_OPTIONS, name
        for g in spec["workerGroupSpecs"]:
            assert not set(g) - WORKER_GROUP, (name, g["groupName"], set(g) - WORKER_GROUP)
        for g in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            params = g.get("rayStartParams", {})
            assert all(isinstance(v, str) for v in params.values()), f"{name}: rayStartParams must be strings"


def test_rayjob_cluster_is_raycluster_yaml(raycluster, rayjob):
    assert rayjob["spec"]["rayClusterSpec"] == raycluster["spec"]


def test_kuberay_autoscaling_and_groups(raycluster, rayjob):
    for name, spec in cluster_specs(raycluster, rayjob):
        assert spec["enableInTreeAutoscaling"] is True, name
        assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0, name
        assert spec["rayVersion"] == ray.__version__, name
        head = spec["headGroupSpec"]["rayStartParams"]
        assert head["num-cpus"] == "0", name
        assert head["dashboard-host"] == "0.0.0.0", name
        groups = spec["workerGroupSpecs"]
        gpu = [g for g in groups if gpu_limit(g) > 0]
        cpu = [g for g in groups if gpu_limit(g) == 0]
        assert gpu and cpu, f"{name}: needs a GPU and a CPU worker group"
        for g in groups:
            assert g["minReplicas"] == 0 and g.get("replicas", 0) == 0, (name, g["groupName"])
            assert g["maxReplicas"] >= 1, (name, g["groupName"])
        for g in gpu:
            res = g["template"]["spec"]["containers"][0]["resources"]
            assert int(g["rayStartParams"]["num-gpus"]) == gpu_limit(g), (name, g["groupName"])
            assert res.get("requests", {}).get("nvidia.com/gpu", res["limits"]["nvidia.com/gpu"]) == \
                res["limits"]["nvidia.com/gpu"], (name, g["groupName"])
        for g in [spec["headGroupSpec"], *groups]:
            for c in g["template"]["spec"]["containers"]:
                assert c["image"].startswith(f"rayproject/ray:{ray.__version__}-py311"), c["image"]


def test_kuberay_autoscaler_reads_the_cluster(raycluster, rayjob):
    """The sidecar's own RayCluster -> autoscaler-config translation accepts it, and packs work right."""
    for name, spec in cluster_specs(raycluster, rayjob):
        cr = {"metadata": {"name": "wsss-ray", "namespace": "default"}, "spec": copy.deepcopy(spec)}
        cfg = _derive_autoscaling_config_from_ray_cr(cr)          # runs validate_config itself
        types = cfg["available_node_types"]
        assert types[cfg["head_node_type"]]["resources"]["CPU"] == 0, name
        assert cfg["idle_timeout_minutes"] == spec["autoscalerOptions"]["idleTimeoutSeconds"] / 60
        gpu_types = {k for k, v in types.items() if is_gpu_type(v)}
        to_add, unfulfilled = plan(cfg, [CAM_ACTOR] * 4)
        assert not unfulfilled and set(to_add) <= gpu_types, (name, to_add)
        to_add, unfulfilled = plan(cfg, [CPU_TASK] * 32)
        assert not unfulfilled and to_add and not set(to_add) & gpu_types, (name, to_add)


def test_rayjob_lifecycle(rayjob):
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0


def test_rayjob_runtime_env(rayjob, runtime_env):
    env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    RuntimeEnv(**env)                                   # Ray's own runtime_env validation
    RuntimeEnv(**runtime_env)
    assert env["working_dir"].startswith(("https://", "s3://", "gs://")) and env["working_dir"].endswith(".zip")
    assert {k: v for k, v in env.items() if k != "working_dir"} == runtime_env, \
        "rayjob.yaml's runtimeEnvYAML and kuberay/runtime_env.yaml differ"


def test_runtime_env_pip_matches_pyproject(runtime_env):
    """The image provides ray; every other dependency is installed with the job, at pyproject's pins."""
    wanted = {n: r for n, r in pyproject_requirements().items() if n != "ray"}
    pip = {Requirement(p).name: Requirement(p) for p in runtime_env["pip"]["packages"]}
    assert set(pip) == set(wanted)
    for n, r in wanted.items():
        assert pip[n].specifier == r.specifier, n


@pytest.fixture(scope="module")
def pseudolabel_parse():
    spec = importlib.util.spec_from_file_location("wsss_jobs_pseudolabel", ROOT / "jobs" / "pseudolabel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parse


def test_rayjob_entrypoint_is_accepted_by_the_job(rayjob, pseudolabel_parse):
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:2] == ["python", "jobs/pseudolabel.py"]
    flags = argv[2:]
    assert flags[flags.index("--num-gpus") + 1] == "1"
    config, _ = pseudolabel_parse(flags)               # argparse exits on an unknown flag
    assert config.num_gpus == 1
    assert config.concurrency == (1, 4)
    assert config.input.startswith("s3://") and config.output.startswith("s3://")
