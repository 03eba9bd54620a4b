"""The layers hold transitively (DESIGN.md, rules of the house): what a module pulls in is
checked in a fresh process, so an import through a third module counts too."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "wsss_ray"
HEAVY = {"torch", "torchvision", "open_clip", "ray", "mlflow", "pyarrow"}
CORE = ["wsss_ray.cam", "wsss_ray.crf", "wsss_ray.lattice", "wsss_ray.masks", "wsss_ray.metrics", "wsss_ray.budget",
        "wsss_ray.labeler", "wsss_ray.post", "wsss_ray.precision", "wsss_ray.tagger", "wsss_ray.labelset",
        "wsss_ray.clip", "wsss_ray.vit",
        "wsss_ray.train.losses", "wsss_ray.train.model", "wsss_ray.train.clipseg", "wsss_ray.train.refine",
        "wsss_ray.train.transforms", "wsss_ray.toyworld", "wsss_ray.quality", "wsss_ray.labelstudio"]
JOBS = sorted((ROOT / "jobs").glob("*.py"))

_LOADED = """
import json, runpy, sys
target = sys.argv[1]
if target.endswith(".py"):
    sys.argv = [target, "--help"]
    try:
        runpy.run_path(target, run_name="__main__")
    except SystemExit:
        pass
else:
    for name in target.split(","):
        __import__(name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def loaded(target: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after importing `target` (comma-separated
    modules) or running the job script `target` with ``--help``."""
    done = subprocess.run([sys.executable, "-c", _LOADED, target], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_settings_and_the_job_skeleton_import_nothing_heavy():
    assert loaded("wsss_ray.config,wsss_ray.cli") & HEAVY == set()


@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.name)
def test_every_jobs_help_imports_nothing_heavy(job):
    assert loaded(str(job)) & HEAVY == set()


def test_the_export_and_the_review_import_need_pyarrow_but_not_ray():
    pulled = loaded("wsss_ray.export,wsss_ray.review")
    assert "pyarrow" in pulled and pulled & {"ray", "torch", "mlflow"} == set()


def test_the_algorithm_core_imports_neither_ray_nor_mlflow():
    pulled = loaded(",".join(CORE))
    assert "torch" in pulled and pulled & {"ray", "mlflow"} == set()


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


# Ray lives only here (DESIGN.md): the job graphs, their driver skeleton and progress, training, tuning.
RAY_USERS = {"cli.py", "store/inputs.py", "pipeline.py", "progress.py", "store/writer.py", "resources.py", "ray_compat.py",
             "train/trainer.py", "train/predict.py", "train/prompts.py", "tune.py", "testing/node_loss.py"}


def test_only_tracking_imports_mlflow():
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if p.name != "tracking.py" and "mlflow" in _imports(p)]
    assert offenders == []


def test_only_the_ray_layer_imports_ray():
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if "ray" in _imports(p) and str(p.relative_to(PACKAGE)) not in RAY_USERS]
    assert offenders == []


def test_the_store_surface_names_resolve_and_a_pyarrow_user_imports_no_ray():
    import wsss_ray.store as store

    missing = [name for name in store.__all__ if not hasattr(store, name)]
    assert missing == []
    assert "atomic_write" in dir(store)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        store.nothing_here  # noqa: B018
    # Only inputs and writer are Ray Data's: the rest of the store is pyarrow alone.
    pulled = loaded(",".join(f"wsss_ray.store.{m}" for m in ("files", "sources", "claim", "output", "reviewed")))
    assert "pyarrow" in pulled and pulled & {"ray", "torch", "mlflow"} == set()
    assert "ray" in loaded("wsss_ray.store.writer")
