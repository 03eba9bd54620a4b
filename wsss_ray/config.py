"""Settings of a pseudo-labelling run from flags, a YAML file or a dict; unknown keys are errors.

One flat namespace: the keys of a ``--config`` file are the job's flag names with
underscores (``batch_size``, ``concurrency``) and the labeller's settings
(``bg_power``, ``crf_config: {iters: 5}``), and the same names are the MLflow params.

    input: voc:/data/VOCdevkit/VOC2012:train
    labelset: voc
    concurrency: [1, 4]
    bg_power: 1
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from wsss_ray.crf import CrfConfig
from wsss_ray.labeler import LabelConfig

_TUPLES = {"templates", "scales"}


@dataclass(frozen=True)
class PipelineConfig:
    """Every setting of a pseudo-labelling run; field names are the job's flags."""

    input: str
    output: str = "outputs/pseudolabels"
    labelset: str = "toyworld"
    model: str = "toyclip"
    pretrained: str | None = None
    method: str = "clip-es"
    limit: int | None = None
    batch_size: int = 16
    concurrency: tuple[int, int] = (1, 1)   # (min, max) CAM actors; the pool autoscales between them
    num_gpus: float | None = None           # per CAM actor; None: 1 if the cluster has GPUs, else 0
    num_cpus: float = 1.0                   # per CAM actor; below 1 packs more actors onto a CPU-only node
    rows_per_file: int = 64                 # rows per block and per Parquet file (the unit of resume)
    max_pixels: int = 50_000_000
    label: LabelConfig = field(default_factory=LabelConfig)

    def __post_init__(self):
        lo, hi = self.concurrency
        if not 1 <= lo <= hi:
            raise ValueError(f"concurrency {lo},{hi} is not a range; give MIN,MAX with 1 <= MIN <= MAX")
        if self.num_cpus <= 0:
            raise ValueError(f"num_cpus must be positive, got {self.num_cpus}")
        for name in ("batch_size", "rows_per_file"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _reject_unknown(d: dict, known: set[str], what: str = "settings") -> None:
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {sorted(known)}")


def label_config_from_dict(d: dict, base: LabelConfig = LabelConfig()) -> LabelConfig:
    """Overlay the keys of `d` (LabelConfig field names; ``crf_config`` a nested map) on `base`."""
    _reject_unknown(d, _fields(LabelConfig), "label settings")
    changes = {}
    for key, value in d.items():
        if key == "crf_config":
            _reject_unknown(value, _fields(CrfConfig), "crf_config settings")
            value = dataclasses.replace(base.crf_config, **value)
        elif key in _TUPLES and value is not None:
            value = tuple(value)
        changes[key] = value
    return dataclasses.replace(base, **changes)


def _read_mapping(path: str | Path) -> dict:
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of settings, e.g. 'bg_power: 1'")
    return data


def load_label_config(path: str | Path, base: LabelConfig = LabelConfig()) -> LabelConfig:
    return label_config_from_dict(_read_mapping(path), base)


def parse_concurrency(value) -> tuple[int, int]:
    """``4`` | ``"1,4"`` | ``[1, 4]`` -> (min, max) actors."""
    parts = [value] if isinstance(value, int) else (str(value).split(",") if isinstance(value, str) else list(value))
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"concurrency {value!r} is not MIN[,MAX]; give e.g. 1,4") from None
    if len(nums) not in (1, 2):
        raise ValueError(f"concurrency {value!r} is not MIN[,MAX]; give e.g. 1,4")
    return nums[0], nums[-1]


def pipeline_config_from_dict(d: dict, base: PipelineConfig) -> PipelineConfig:
    """Overlay `d` (pipeline and label settings in one flat namespace) on `base`."""
    pipeline_keys, label_keys = _fields(PipelineConfig) - {"label"}, _fields(LabelConfig)
    _reject_unknown(d, pipeline_keys | label_keys)
    changes = {k: v for k, v in d.items() if k in pipeline_keys}
    if "concurrency" in changes:
        changes["concurrency"] = parse_concurrency(changes["concurrency"])
    label = label_config_from_dict({k: v for k, v in d.items() if k in label_keys}, base.label)
    return dataclasses.replace(base, **changes, label=label)


def resolve_pipeline_config(settings: dict, config_file: str | Path | None = None) -> PipelineConfig:
    """The run's settings: defaults < `config_file` < `settings` (the flags given).

    Without an ``input`` anywhere this is the embedded default: a generated toy-world
    collection labelled with the toy world's tuned settings (see ``wsss_ray.toyworld``).
    """
    merged = {**(_read_mapping(config_file) if config_file else {}), **settings}
    if merged.get("input") is None:
        from wsss_ray.toyworld import embedded_default

        manifest, toy_label = embedded_default()
        base = PipelineConfig(input=manifest, label=toy_label)
    else:
        base = PipelineConfig(input=merged["input"])
    return pipeline_config_from_dict({k: v for k, v in merged.items() if k != "input"}, base)


def flatten(obj, prefix: str = "") -> dict:
    """Dataclass/dict -> flat {"a.b": value}, tuples joined by commas (MLflow param values)."""
    d = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else dict(obj)
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v
    return out


def params(config: PipelineConfig) -> dict:
    """Every setting under the name it has in a config file and on the command line."""
    flat = flatten(config)
    return {k.removeprefix("label."): v for k, v in flat.items()}


# ------------------------------------------------------------------ training

TRAIN_LOSSES = ("cgl", "ce")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a segmentation training run; field names are the flags of ``jobs/train.py``.

    `input` is the pseudo-label job's Parquet output; `val` a source with ground-truth
    masks (None with the toy world: a generated toy val split). `output` holds the Ray
    Train run (checkpoints) and is where a re-run resumes.
    """

    input: str = "outputs/pseudolabels"
    val: str | None = None
    output: str = "outputs/train"
    labelset: str = "toyworld"
    loss: str = "cgl"
    cgl_threshold: float = 0.95
    arch: str = "tiny"
    backbone_weights: str | None = None
    epochs: int = 10
    batch_size: int = 16                    # per worker
    lr: float = 0.003                       # Adam, poly decay over the epochs
    crop: int = 64
    num_workers: int = 2
    use_gpu: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.loss not in TRAIN_LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose from {list(TRAIN_LOSSES)}")
        if not 0.0 <= self.cgl_threshold <= 1.0:
            raise ValueError(f"cgl_threshold must lie in [0, 1], got {self.cgl_threshold}")
        for name, low in (("epochs", 1), ("batch_size", 2), ("crop", 8), ("num_workers", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be at least {low}, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


def train_config_from_dict(d: dict, base: TrainConfig = TrainConfig()) -> TrainConfig:
    """Overlay `d` (TrainConfig field names) on `base`; unknown keys are errors."""
    _reject_unknown(d, _fields(TrainConfig))
    return dataclasses.replace(base, **d)


def resolve_train_config(settings: dict, config_file: str | Path | None = None) -> TrainConfig:
    """The run's settings: defaults < `config_file` < `settings` (the flags given)."""
    return train_config_from_dict({**(_read_mapping(config_file) if config_file else {}), **settings})


# ------------------------------------------------------------------ command lines


def parse_settings(parser, argv: list[str] | None, resolve: Callable[[dict, str | None], object]):
    """Parse a job's flags (adding ``--config`` and ``--mlflow-uri``) into (settings, mlflow_uri).

    Every other flag defaults to None so that only the flags given override the
    ``--config`` file; `resolve` turns them into the job's settings object.
    """
    parser.add_argument("--config", help="YAML of settings (flag names with underscores); flags given override it")
    parser.add_argument("--mlflow-uri", help="MLflow tracking URI (default: sqlite store outputs/mlflow.db)")
    a = vars(parser.parse_args(argv))
    config_file, mlflow_uri = a.pop("config"), a.pop("mlflow_uri")
    try:
        return resolve({k: v for k, v in a.items() if v is not None}, config_file), mlflow_uri
    except (OSError, ValueError, TypeError) as e:
        parser.error(str(e))
