"""LabelConfig from a YAML/JSON file or a dict (the `--config` flag); unknown keys are errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from wsss_ray.crf import CrfConfig
from wsss_ray.labeler import LabelConfig

_TUPLES = {"templates", "scales"}


def label_config_from_dict(d: dict, base: LabelConfig = LabelConfig()) -> LabelConfig:
    """Overlay the keys of `d` (LabelConfig field names; ``crf_config`` a nested map) on `base`."""
    known = {f.name for f in dataclasses.fields(LabelConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown label settings {unknown}; known: {sorted(known)}")
    changes = {}
    for key, value in d.items():
        if key == "crf_config":
            crf_known = {f.name for f in dataclasses.fields(CrfConfig)}
            bad = sorted(set(value) - crf_known)
            if bad:
                raise ValueError(f"unknown crf_config settings {bad}; known: {sorted(crf_known)}")
            value = dataclasses.replace(base.crf_config, **value)
        elif key in _TUPLES and value is not None:
            value = tuple(value)
        changes[key] = value
    return dataclasses.replace(base, **changes)


def load_label_config(path: str | Path, base: LabelConfig = LabelConfig()) -> LabelConfig:
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of label settings, e.g. 'bg_power: 1'")
    return label_config_from_dict(data, base)


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
