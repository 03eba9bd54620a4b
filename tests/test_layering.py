"""The algorithm core stays pure torch/numpy: no Ray, no MLflow (DESIGN.md, rules of the house)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "wsss_ray"
CORE = ["cam", "crf.py", "lattice.py", "masks.py", "metrics.py", "labeler.py", "labelset.py", "clip.py", "sources.py", "files.py",
        "config.py", "toyworld", "train/__init__.py", "train/losses.py", "train/model.py", "train/transforms.py"]
# Ray lives only here (DESIGN.md): the job graphs, their shared Parquet rows and resources, training, tuning.
RAY_USERS = {"inputs.py", "pipeline.py", "rows.py", "resources.py", "ray_compat.py", "train/trainer.py", "train/predict.py",
             "train/prompts.py", "tune.py"}
OUTSIDE_TRACKING = [p for p in PACKAGE.rglob("*.py") if p.name != "tracking.py"]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", [p for c in CORE for p in ((PACKAGE / c).rglob("*.py") if (PACKAGE / c).is_dir()
                                                            else [PACKAGE / c])], ids=str)
def test_core_imports_neither_ray_nor_mlflow(path):
    assert not _imports(path) & {"ray", "mlflow"}, f"{path.relative_to(PACKAGE)} imports Ray or MLflow"


def test_only_tracking_imports_mlflow():
    offenders = [str(p.relative_to(PACKAGE)) for p in OUTSIDE_TRACKING if "mlflow" in _imports(p)]
    assert offenders == []


def test_only_the_ray_layer_imports_ray():
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if "ray" in _imports(p) and str(p.relative_to(PACKAGE)) not in RAY_USERS]
    assert offenders == []
