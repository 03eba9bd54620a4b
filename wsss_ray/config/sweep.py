"""The settings of a Ray Tune sweep."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from wsss_ray.config.label import LOCAL_DIR, TOYCLIP
from wsss_ray.config.layers import at_least, choice

SWEEP_KINDS = ("labels", "tags", "train")
SEARCHERS = ("optuna", "random")


@dataclass(frozen=True)
class SweepConfig:
    """Every setting of a Ray Tune sweep; field names are the flags of ``jobs/tune.py``.

    ``kind: labels`` searches the labelling settings on `input`, a dev source with
    masks (default: 200 generated toy val images); ``kind: tags`` searches the
    tagger's settings (``tagger.*``) on `input`, a dev source with image-level labels
    (no masks needed), for the F1 of its labels; ``kind: train`` searches training
    settings, `input` being the labelling job's Parquet output and `val` the
    validation source, as for ``jobs/train.py``. `space` is a YAML search space
    (default: the one shipped for the kind). `config` is a settings file the trials
    start from: a labelling ``--config`` (labels) or a training one (train).
    """

    what: ClassVar[str] = "sweep"

    kind: str = "labels"
    input: str | None = None
    val: str | None = None
    output: str = "outputs/sweep"
    space: str | None = None
    config: str | None = None
    model: str = TOYCLIP
    pretrained: str | None = None
    labelset: str = "toyworld"
    method: str | None = None               # labels: None = --config's, else the model's own, else the job's (excel)
    limit: int = 200                        # dev images (labels, tags)
    searcher: str = "optuna"
    num_samples: int = 32
    max_concurrent: int = 2
    time_budget_s: float | None = None
    seed: int = 0
    cam_cache: bool = True                  # labels: reuse CAMs across trials that share CAM-level settings
    save_to_model: bool = False             # labels, tags: also write the best settings into the model's label_config.yaml
    num_workers: int = 1                    # train: Ray Train workers per trial

    def __post_init__(self):
        choice("kind", self.kind, SWEEP_KINDS)
        choice("searcher", self.searcher, SEARCHERS)
        at_least(self, ("limit", "num_samples", "max_concurrent", "num_workers"), 1)
        if self.save_to_model and not self.model.startswith(LOCAL_DIR):
            raise ValueError(f"save_to_model writes label_config.yaml beside a local-dir: model's weights; "
                             f"{self.model!r} is not one")
