"""The CAM methods' settings, and the one registry of ``--method`` names.

A method is one module (its :class:`~wsss_ray.cam.base.CamMethod` subclass, and its
settings dataclass unless it is one of those below) plus one line in
:data:`METHODS`. The registry names both by import path, so listing the methods
(``--help``) and checking the built-ins' settings import no torch; a method's
module is imported where it labels (the CAM actors, ``Labeler``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, ClassVar

from wsss_ray.config.layers import at_least, choice, side

SYNONYM_FUSIONS = ("concat", "mean", "name")
SOFTMAX_OVER = ("present", "all")
SCORES = ("softmax", "logit")
FREESEG_SCORES = ("softmax", "surgery")
CAA_SOURCES = ("attention", "keys")


@dataclass(frozen=True)
class PromptedCamConfig:
    """What every CLIP CAM method here shares: how classes become prompts, the scales and the size budget."""

    section: ClassVar[str]                      # the settings section: errors name it

    templates: tuple[str, ...] | None = None    # None: the labelset's
    synonym_fusion: str = "concat"              # concat (CLIP-ES) | mean | name
    background_words: bool = True               # the labelset's background words join the classes' texts
    scales: tuple[float, ...] = (1.0,)          # image scales whose CAMs are averaged (x max_side)
    max_side: int | None = 640                  # the model sees the image shrunk to this long side (x scales)

    def __post_init__(self):
        choice(f"{self.section}.synonym_fusion", self.synonym_fusion, SYNONYM_FUSIONS)
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"{self.section}.scales must be positive numbers, got {self.scales}")
        if self.templates is not None and not all("{}" in t for t in self.templates):
            raise ValueError(f"each of {self.section}.templates needs a {{}} for the class text, got {self.templates}")
        side(f"{self.section}.max_side", self.max_side)


@dataclass(frozen=True)
class ClipESConfig(PromptedCamConfig):
    """CLIP-ES (softmax-GradCAM + class-aware attention affinity); defaults are the paper's for ViT-B/16."""

    section: ClassVar[str] = "clip_es"

    softmax_over: str = "present"               # present (CLIP-ES) | all
    score: str = "softmax"                      # softmax (CLIP-ES) | logit (plain Grad-CAM)
    caa: bool = True                            # class-aware attention affinity after the CAMs
    caa_layers: int | None = None               # None: the last 2/3 of the blocks (8 of 12 in CLIP-ES)
    caa_source: str = "attention"               # attention (CLIP-ES) | keys (key self-similarity)
    box_threshold: float = 0.4                  # a class's box: where its CAM reaches this share of its maximum
    sinkhorn_iters: int = 3                     # Sinkhorn normalisation rounds of the attention affinity
    affinity_power: int = 2                     # the affinity's matrix power: propagation steps
    max_pairs: int = 64                         # (image, class) pairs per last-block pass; memory only

    def __post_init__(self):
        super().__post_init__()
        choice(f"{self.section}.softmax_over", self.softmax_over, SOFTMAX_OVER)
        choice(f"{self.section}.score", self.score, SCORES)
        choice(f"{self.section}.caa_source", self.caa_source, CAA_SOURCES)
        at_least(self, ("max_pairs", "affinity_power"), 1)


@dataclass(frozen=True)
class SemplesConfig(ClipESConfig):
    """SemPLeS on CLIP-ES: each present class's learned background prompt joins the softmax.

    Every CLIP-ES setting applies (its section may start from the clip_es one with a
    YAML merge key, ``semples: {<<: *clip_es}``); `prompts` is the folder or file
    (local or URI) that ``jobs/learn_prompts.py`` wrote for the same model and labelset.
    """

    section: ClassVar[str] = "semples"

    prompts: str | None = None

    def check_complete(self) -> None:
        """Raise unless the settings can label: the learned prompts must be named."""
        if not self.prompts:
            raise ValueError("method semples needs its learned prompts: pass --prompts PROMPTS, the --output "
                             "of jobs/learn_prompts.py")


@dataclass(frozen=True)
class FreeSegConfig(PromptedCamConfig):
    """FreeSeg on CLIP: dense image-text similarity (ITSM), no gradients, no training.

    Patch features come through CLIP Surgery's value-value attention path in the last
    `surgery_layers` blocks (0: the raw ITSM, which lights up the background). A
    class's map is its similarity against the image's own classes only (the
    partial-label strategy): a softmax over them plus the background words, or the
    similarity minus its mean over them (CLIP Surgery's feature surgery). Smoothed min
    pooling (a soft minimum over `window` x `window` patches at `temperature`) then
    suppresses isolated responses; the shared post-processing takes the per-pixel
    argmax with its confidence (the pixel strategy).
    """

    section: ClassVar[str] = "freeseg"

    score: str = "softmax"                      # softmax | surgery
    surgery_layers: int = 1
    window: int = 3                             # patches; odd; 1 turns the pooling off
    temperature: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        choice(f"{self.section}.score", self.score, FREESEG_SCORES)
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"freeseg.window must be an odd number of patches, got {self.window}")
        if self.temperature <= 0:
            raise ValueError(f"freeseg.temperature must be positive, got {self.temperature}")
        at_least(self, ("surgery_layers",), 0)


EXCEL_NORMS = ("imagenet", "clip")


@dataclass(frozen=True)
class ExcelConfig(PromptedCamConfig):
    """ExCEL's training-free path (Yang et al., CVPR 2025): one forward pass, no gradients.

    Static visual calibration: the last `dense_layers` blocks also run a second, dense
    path whose attention is the mean of softmax(q qᵀ), softmax(k kᵀ) and softmax(v vᵀ)
    summed over heads, without the MLP, beside the unchanged original path. Its patch
    features are compared with the class and background texts after CLIP Surgery's
    redundancy removal. The class-aware affinity comes from the original path's attention
    of the last `affinity_layers` blocks (boxes at `box_threshold`), then the background
    (1 - max) and, with `par_iters` > 0, pixel-adaptive refinement (PAR) at the image's
    size within `par_max_side`: the authors end there (20 iterations, no CRF); here PAR is off
    by default and the shared dense CRF follows, the better of the two on the toy world
    (docs/RESULTS.md). `descriptors` names class descriptions in the authors' JSON
    layout (class -> list of sentences): they are embedded with the same CLIP, clustered
    into `clusters` attribute centres and added to each class's text (text semantic
    enrichment); without it, the calibration alone. The defaults are the authors' for
    ViT-B/16 on VOC: a square `input_size` of 320 px from the ImageNet-normalised image.
    """

    section: ClassVar[str] = "excel"

    input_size: int | None = 320                # square model input (aspect not kept); None: the image's own
    input_norm: str = "imagenet"                # imagenet (the authors') | clip (the model's own mean/std)
    dense_layers: int | None = None             # None: 5 of 12 blocks (ViT-B/16's), in proportion to the model's
    affinity: bool = True                       # the class-aware affinity (off: the calibrated maps as they are)
    affinity_layers: int | None = None          # None: dense_layers + 1 (6 on ViT-B/16)
    box_threshold: float = 0.79                 # a class's box: where its map reaches this share of its maximum
    sinkhorn_iters: int = 3                     # Sinkhorn normalisation rounds of the attention affinity
    affinity_power: int = 2                     # the affinity's matrix power: propagation steps
    par_iters: int = 0                          # PAR's iterations (the authors': 20); 0: none, the dense CRF alone
    par_dilations: tuple[int, ...] = (1, 2, 4, 8, 12, 24)  # PAR's neighbour distances in pixels (the authors')
    par_max_side: int | None = 320              # PAR runs on the image shrunk to this long side
    descriptors: str | None = None              # JSON of class descriptions (local or URI); None: no enrichment
    clusters: int = 112                         # attribute centres k-means makes of the descriptions
    drop_share: float = 0.1                     # the share of least similar attribute centres each class ignores

    def __post_init__(self):
        super().__post_init__()
        choice(f"{self.section}.input_norm", self.input_norm, EXCEL_NORMS)
        at_least(self, ("affinity_power", "clusters"), 1)
        for name in ("dense_layers", "affinity_layers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"excel.{name} must be at least 1 block or null, got {getattr(self, name)}")
        at_least(self, ("sinkhorn_iters", "par_iters"), 0)
        side(f"{self.section}.input_size", self.input_size)
        side(f"{self.section}.par_max_side", self.par_max_side)
        if not self.par_dilations or min(self.par_dilations) < 1:
            raise ValueError(f"excel.par_dilations must be positive pixel distances, got {self.par_dilations}")
        if not 0 < self.box_threshold < 1:
            raise ValueError(f"excel.box_threshold must lie in (0, 1), got {self.box_threshold}")
        if not 0 <= self.drop_share < 1:
            raise ValueError(f"excel.drop_share must lie in [0, 1), got {self.drop_share}")


def load_target(target: str | type) -> Any:
    """The object an import path ``"package.module:name"`` names (a class given is itself)."""
    if isinstance(target, type):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Method:
    """A ``--method``: its settings dataclass and its :class:`~wsss_ray.cam.base.CamMethod`
    class, each a class or an import path ``"package.module:Name"`` (imported when needed)."""

    settings: str | type
    implementation: str | type

    def settings_class(self) -> type:
        return load_target(self.settings)

    def load(self) -> type:
        """The method's class (imports its module: torch, open_clip)."""
        return load_target(self.implementation)


METHODS: dict[str, Method] = {
    "clip-es": Method(ClipESConfig, "wsss_ray.cam.clip_es:ClipES"),
    "excel": Method(ExcelConfig, "wsss_ray.cam.excel:Excel"),
    "freeseg": Method(FreeSegConfig, "wsss_ray.cam.freeseg:FreeSeg"),
    "semples": Method(SemplesConfig, "wsss_ray.cam.semples:SemPLeS"),
}


def method_entry(name: str) -> Method:
    """The registry entry of `name`; a miss lists the registered names."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(map(repr, sorted(METHODS)))}")
    return METHODS[name]


def method_key(name: str) -> str:
    """The section of a method's settings in files and params: ``clip-es`` -> ``clip_es``."""
    return name.replace("-", "_")


def method_config_class(name: str) -> type:
    """The settings class of a registered CAM method."""
    return method_entry(name).settings_class()


def method_sections() -> dict[str, str]:
    """Settings section -> method name, for every registered method."""
    return {method_key(name): name for name in METHODS}
