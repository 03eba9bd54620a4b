"""Labelset: the classes to segment, their synonyms, background words and prompt templates.

A labelset is the one place where class indices are defined: mask value i (1-based)
is ``classes[i-1]``, 0 is background, 255 is ignore. Built-ins: ``voc``, ``coco``,
``toyworld``; anything else is a path to a YAML file in the DESIGN.md format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassSpec:
    """One class: its canonical name and the words that mean it (name first)."""

    name: str
    synonyms: tuple[str, ...] = ()

    @property
    def words(self) -> tuple[str, ...]:
        return self.synonyms or (self.name,)


@dataclass(frozen=True)
class Labelset:
    """Classes, background words and templates; see the module docstring."""

    name: str
    classes: tuple[ClassSpec, ...]
    templates: tuple[str, ...] = ("a photo of a {}.",)
    background: tuple[str, ...] = ()
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.classes:
            raise ValueError(f"labelset {self.name!r} has no classes; list them under 'classes:'")
        if len(self.classes) > 254:
            raise ValueError(f"labelset {self.name!r} has {len(self.classes)} classes; masks hold at most 254")
        for t in self.templates:
            if t.count("{}") != 1:
                raise ValueError(f"template {t!r} must contain exactly one '{{}}' for the class text")
        names = [c.name for c in self.classes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"labelset {self.name!r} lists classes {dupes} more than once; keep one entry each")
        self._index.update({n: i for i, n in enumerate(names)})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def index(self, label: str) -> int:
        """0-based class index of `label` (mask value is index + 1)."""
        try:
            return self._index[label]
        except KeyError:
            raise KeyError(f"label {label!r} is not in labelset {self.name!r}; known: {list(self.names)}") from None

    def class_ids(self, labels: list[str]) -> list[int]:
        """0-based indices of an image's labels, deduplicated, in the given order (a label not in
        the labelset raises KeyError naming it)."""
        return list(dict.fromkeys(self.index(label) for label in labels))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "templates": list(self.templates),
            "background": list(self.background),
            "classes": [{"name": c.name, "synonyms": list(c.synonyms)} for c in self.classes],
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Labelset":
        try:
            classes = tuple(
                ClassSpec(c, ()) if isinstance(c, str) else ClassSpec(c["name"], tuple(c.get("synonyms") or ()))
                for c in d["classes"]
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"labelset needs 'classes': a list of names or {{name, synonyms}} maps ({e})") from None
        return cls(
            name=str(d.get("name", "custom")),
            classes=classes,
            templates=tuple(d.get("templates") or ("a photo of a {}.",)),
            background=tuple(d.get("background") or ()),
        )


BUILTINS = ("voc", "coco", "toyworld")


def load_labelset(spec: str | Path | Labelset) -> Labelset:
    """Resolve ``voc|coco|toyworld`` or a YAML path into a Labelset."""
    if isinstance(spec, Labelset):
        return spec
    spec = str(spec)
    if spec in BUILTINS:
        text = resources.files("wsss_ray").joinpath("labelsets", f"{spec}.yaml").read_text()
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"labelset {spec!r} is neither a built-in {list(BUILTINS)} nor a YAML file")
        text = path.read_text()
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"labelset {spec!r} must be a YAML mapping with 'classes' (see DESIGN.md)")
    return Labelset.from_dict(data)
