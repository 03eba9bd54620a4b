"""Settings from mappings: checks, the overlay of one layer on another, and the flat dotted names.

Every job's settings class is a frozen dataclass; a layer is a mapping (a YAML file,
the flags given) whose keys are its field names, nested for nested dataclasses or
dotted (``post.crf.iters``). :func:`resolve` stacks them: the defaults, the
``--config`` file, then the flags.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

T = TypeVar("T")


# ------------------------------------------------------------------ checks, one sentence each


def choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def side(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a whole number of pixels (at least 1) or null, got {value!r}")


def at_least(owner: object, names: tuple[str, ...], low: float) -> None:
    for name in names:
        if getattr(owner, name) < low:
            raise ValueError(f"{name} must be at least {low}, got {getattr(owner, name)}")


def concurrency_range(concurrency: tuple[int, int]) -> None:
    lo, hi = concurrency
    if not 1 <= lo <= hi:
        raise ValueError(f"concurrency {lo},{hi} is not a range; give MIN,MAX with 1 <= MIN <= MAX")


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


# ------------------------------------------------------------------ building from mappings


def fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def reject_unknown(d: Mapping, known, what: str) -> None:
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {sorted(known)}")


def build(cls: type[T], d: Mapping | None, base: T | None = None, what: str | None = None) -> T:
    """Overlay the mapping `d` on `base` (default: ``cls()``), recursing into nested dataclasses.

    Lists become tuples where the field is a tuple; unknown keys are errors naming `what`.
    """
    base = cls() if base is None else base
    if d is None:
        return base
    if not isinstance(d, Mapping):
        raise ValueError(f"{what or cls.__name__} must be a mapping of settings, got {d!r}")
    known = fields(cls)
    reject_unknown(d, known, f"{what or cls.__name__} settings")
    changes = {}
    for key, value in d.items():
        current = getattr(base, key)
        if dataclasses.is_dataclass(current) and not isinstance(current, type):
            value = build(type(current), value, current, f"{what}.{key}" if what else key)
        elif "tuple" in str(known[key].type) and isinstance(value, (list, str)):
            value = (value,) if isinstance(value, str) else tuple(value)  # a lone string is a 1-tuple
        changes[key] = value
    try:
        return dataclasses.replace(base, **changes)
    except TypeError as e:
        raise ValueError(f"bad {what or cls.__name__} settings: {e}") from None


def unflatten(d: Mapping[str, Any]) -> dict:
    """``{"post.crf.iters": 5}`` -> ``{"post": {"crf": {"iters": 5}}}`` (nested keys pass through)."""
    out: dict = {}
    for key, value in d.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"setting {key!r} conflicts with {p!r} given as a value")
        if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
            node[leaf] = merge(node[leaf], value)
        else:
            node[leaf] = dict(value) if isinstance(value, Mapping) else value
    return out


def merge(*layers: Mapping) -> dict:
    """Deep-merge mappings of settings, later layers winning key by key."""
    out: dict = {}
    for layer in layers:
        for key, value in unflatten(layer).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
    return out


def read_mapping(path: str | Path) -> dict:
    """A YAML file of settings as a dict; anything but a mapping is an error naming the file."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of settings, e.g. 'post: {{bg_power: 1}}'")
    return data


def given(settings: Mapping, config_file: str | Path | None = None) -> dict:
    """The layers a user gave, merged: the `config_file`, then `settings` (the flags given)."""
    return merge(read_mapping(config_file) if config_file else {}, settings)


def resolve(cls: type[T], settings: Mapping, config_file: str | Path | None = None) -> T:
    """A job's settings: the defaults < `config_file` < `settings` (the flags given); errors
    name the settings by the class's ``what`` (``unknown training settings ['los']``)."""
    return build(cls, given(settings, config_file), what=getattr(cls, "what", None))


# ------------------------------------------------------------------ to params


def flatten(obj: Any, prefix: str = "") -> dict:
    """Dataclass/dict -> flat ``{"a.b": value}``, tuples joined by commas (MLflow param values)."""
    d = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else dict(obj)
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if dataclasses.is_dataclass(v) or isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v
    return out


def plain(value: Any) -> Any:
    """A settings object as YAML-ready data: dataclasses as dicts, tuples as lists."""
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return list(value) if isinstance(value, tuple) else value
