"""Every setting of every job, as frozen dataclasses, and how they are resolved.

Importing this module costs nothing: it needs only the standard library and PyYAML,
never torch, open_clip, Ray or MLflow, so a driver, a CLI's ``--help`` or a sweep can
build and check settings before anything heavy starts.

One name for one thing. A setting has the same dotted name in a ``--config`` file,
on the command line (``--batch-size`` for ``batch_size``), in MLflow params and in a
sweep's search space:

    input: voc:/data/VOCdevkit/VOC2012:train      # the labelling job (LabelJobConfig)
    method: clip-es
    clip_es: {caa: false, scales: [1.0, 2.0]}     # the method's own settings (ClipESConfig)
    post: {bg_power: 0.5, crf: {iters: 10}}       # after the CAMs, shared by all methods (PostConfig)

-> params ``input``, ``method``, ``clip_es.caa``, ``clip_es.scales``, ``post.bg_power``,
``post.crf.iters``. A method's section is its registry name with ``_`` for ``-``.

Settings are layered, each layer overriding the one before: the defaults, the
model's own ``label_config.yaml`` (beside its weights: ``toyclip`` ships one), the
``--config`` file, then the flags given. Unknown keys and bad option values are
errors raised here, before Ray starts.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

# ------------------------------------------------------------------ option values

SYNONYM_FUSIONS = ("concat", "mean", "name")
SOFTMAX_OVER = ("present", "all")
SCORES = ("softmax", "logit")
FREESEG_SCORES = ("softmax", "surgery")
CAA_SOURCES = ("attention", "keys")
CRF_BACKENDS = ("torch", "pydensecrf")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LOSSES = ("cgl", "ce")
SWEEP_KINDS = ("labels", "train")
SEARCHERS = ("optuna", "random")

TOYCLIP = "toyclip"
LOCAL_DIR = "local-dir:"
MODEL_SETTINGS_FILE = "label_config.yaml"


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _side(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a whole number of pixels (at least 1) or null, got {value!r}")


def _at_least(owner: object, names: tuple[str, ...], low: float) -> None:
    for name in names:
        if getattr(owner, name) < low:
            raise ValueError(f"{name} must be at least {low}, got {getattr(owner, name)}")


# ------------------------------------------------------------------ labelling


@dataclass(frozen=True)
class CrfConfig:
    """Dense-CRF kernels (positions in pixels, colours in 0..255); ``iters: 0`` turns the CRF off.

    Kernel defaults are the CLIP-ES reference's (deeplab-pytorch's kernel: gaussian 1/3,
    bilateral 67/3/4). Two backends run the same model (``wsss_ray.crf``): ``torch``
    (the default: about 5x faster on a CPU at VOC size, and it can run on a GPU) and
    ``pydensecrf`` (the reference implementation); their mIoU agrees within 0.5 points
    (docs/RESULTS.md). On the 44 sample photographs with CAM-like masks a lighter
    kernel (1/1, 20/10/1) scores a little higher (``benchmarks/crf_defaults.py``);
    on a larger set of 450 photos the reference kernel gained more (+4.3 mIoU
    against +2.3), so the reference is the default. Tune it per collection.
    """

    iters: int = 10
    gauss_sxy: float = 1.0
    gauss_compat: float = 3.0
    bilateral_sxy: float = 67.0
    bilateral_srgb: float = 3.0
    bilateral_compat: float = 4.0
    backend: str = "torch"      # torch: permutohedral lattice, on the caller's device; pydensecrf: the reference
    downsample: int = 4         # torch: mean field on a grid up to this many times coarser (1: full resolution)
    max_side: int | None = 640  # the CRF runs on the image shrunk to this long side (wsss_ray.budget); None: any size

    def __post_init__(self):
        _at_least(self, ("iters",), 0)
        _at_least(self, ("downsample",), 1)
        _side("post.crf.max_side", self.max_side)
        if self.backend not in CRF_BACKENDS:
            raise ValueError(f"crf backend must be one of {CRF_BACKENDS}, got {self.backend!r}")


@dataclass(frozen=True)
class PostConfig:
    """Everything after the CAMs, shared by every CAM method: background score and CRF.

    The background score is ``(1 - max_k cam_k) ** bg_power`` (CLIP-ES), or the
    constant `bg_threshold` when given. The mask is the per-pixel argmax; the
    confidence (max probability) is stored beside it and thresholds are applied by
    whoever uses it (CGL training, ``export --min-confidence``).
    """

    bg_power: float = 1.0
    bg_threshold: float | None = None
    crf: CrfConfig = field(default_factory=CrfConfig)

    def __post_init__(self):
        if self.bg_power <= 0:
            raise ValueError(f"bg_power must be positive, got {self.bg_power}")
        if self.bg_threshold is not None and not 0 <= self.bg_threshold <= 1:
            raise ValueError(f"bg_threshold must lie in [0, 1] or be null, got {self.bg_threshold}")


@dataclass(frozen=True)
class ClipESConfig:
    """CLIP-ES (softmax-GradCAM + class-aware attention affinity); defaults are the paper's for ViT-B/16."""

    templates: tuple[str, ...] | None = None    # None: the labelset's
    synonym_fusion: str = "concat"              # concat (CLIP-ES) | mean | name
    background_words: bool = True
    softmax_over: str = "present"               # present (CLIP-ES) | all
    score: str = "softmax"                      # softmax (CLIP-ES) | logit (plain Grad-CAM)
    scales: tuple[float, ...] = (1.0,)
    max_side: int | None = 640                  # the model sees the image shrunk to this long side (x scales)
    caa: bool = True
    caa_layers: int | None = None               # None: the last 2/3 of the blocks (8 of 12 in CLIP-ES)
    caa_source: str = "attention"               # attention (CLIP-ES) | keys (key self-similarity)
    box_threshold: float = 0.4
    sinkhorn_iters: int = 3
    affinity_power: int = 2
    max_pairs: int = 64                         # (image, class) pairs per last-block pass; memory only

    def __post_init__(self):
        _choice("clip_es.synonym_fusion", self.synonym_fusion, SYNONYM_FUSIONS)
        _choice("clip_es.softmax_over", self.softmax_over, SOFTMAX_OVER)
        _choice("clip_es.score", self.score, SCORES)
        _choice("clip_es.caa_source", self.caa_source, CAA_SOURCES)
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"clip_es.scales must be positive numbers, got {self.scales}")
        if self.templates is not None and not all("{}" in t for t in self.templates):
            raise ValueError(f"each of clip_es.templates needs a {{}} for the class text, got {self.templates}")
        _at_least(self, ("max_pairs", "affinity_power"), 1)
        _side("clip_es.max_side", self.max_side)


@dataclass(frozen=True)
class SemplesConfig(ClipESConfig):
    """SemPLeS on CLIP-ES: each present class's learned background prompt joins the softmax.

    Every CLIP-ES setting applies (its section may start from the clip_es one with a
    YAML merge key, ``semples: {<<: *clip_es}``); `prompts` is the folder or file
    (local or URI) that ``jobs/learn_prompts.py`` wrote for the same model and labelset.
    """

    prompts: str | None = None

    def check_complete(self) -> None:
        """Raise unless the settings can label: the learned prompts must be named."""
        if not self.prompts:
            raise ValueError("method semples needs its learned prompts: pass --prompts PROMPTS, the --output "
                             "of jobs/learn_prompts.py")


@dataclass(frozen=True)
class FreeSegConfig:
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

    templates: tuple[str, ...] | None = None    # None: the labelset's
    synonym_fusion: str = "concat"
    background_words: bool = True
    score: str = "softmax"                      # softmax | surgery
    surgery_layers: int = 1
    window: int = 3                             # patches; odd; 1 turns the pooling off
    temperature: float = 0.1
    scales: tuple[float, ...] = (1.0,)
    max_side: int | None = 640                  # the model sees the image shrunk to this long side (x scales)

    def __post_init__(self):
        _choice("freeseg.synonym_fusion", self.synonym_fusion, SYNONYM_FUSIONS)
        _choice("freeseg.score", self.score, FREESEG_SCORES)
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"freeseg.window must be an odd number of patches, got {self.window}")
        if self.temperature <= 0:
            raise ValueError(f"freeseg.temperature must be positive, got {self.temperature}")
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"freeseg.scales must be positive numbers, got {self.scales}")
        if self.templates is not None and not all("{}" in t for t in self.templates):
            raise ValueError(f"each of freeseg.templates needs a {{}} for the class text, got {self.templates}")
        _at_least(self, ("surgery_layers",), 0)
        _side("freeseg.max_side", self.max_side)


@dataclass(frozen=True)
class LabelJobConfig:
    """Every setting of a pseudo-labelling run; field names are the job's flags.

    `method_config` is the settings object of `method` (its ``config_class``); it is
    written under the method's own key (``clip_es``) in files and params. Built
    directly, it holds the method's reference defaults; :func:`resolve_label_job`
    (what the jobs and ``Labeler.from_spec`` use) also applies the model's
    ``label_config.yaml``.
    """

    input: str | None = None                # None: none given (the job then generates the toy world)
    output: str = "outputs/pseudolabels"
    labelset: str = "toyworld"
    model: str = TOYCLIP
    pretrained: str | None = None
    method: str = "clip-es"
    limit: int | None = None
    batch_size: int = 16
    concurrency: tuple[int, int] = (1, 1)   # (min, max) CAM actors; the pool autoscales between them
    num_gpus: float | None = None           # per CAM actor; None: 1 if the cluster has GPUs, else 0
    num_cpus: float = 1.0                   # per CAM actor; below 1 packs more actors onto a CPU-only node
    rows_per_file: int = 4096               # rows per Parquet file (the unit of resume)
    max_pixels: int = 50_000_000
    precision: str = "auto"                 # the CAM model's autocast: auto = bf16 on CPUs with native bf16, else fp32
    post: PostConfig = field(default_factory=PostConfig)
    method_config: Any = None               # None: the method's defaults

    def __post_init__(self):
        lo, hi = self.concurrency
        if not 1 <= lo <= hi:
            raise ValueError(f"concurrency {lo},{hi} is not a range; give MIN,MAX with 1 <= MIN <= MAX")
        if self.num_cpus <= 0:
            raise ValueError(f"num_cpus must be positive, got {self.num_cpus}")
        _at_least(self, ("batch_size", "rows_per_file"), 1)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        cls = method_config_class(self.method)
        if self.method_config is None:
            object.__setattr__(self, "method_config", cls())
        elif type(self.method_config) is not cls:
            raise TypeError(f"method {self.method!r} takes a {cls.__name__}, got {type(self.method_config).__name__}")
        getattr(self.method_config, "check_complete", lambda: None)()


# ------------------------------------------------------------------ training


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a segmentation training run; field names are the flags of ``jobs/train.py``.

    `input` is the pseudo-label job's Parquet output; `val` a source with ground-truth
    masks (None with the toy world: a generated toy val split). `output` holds the Ray
    Train run (checkpoints) and is where a re-run resumes. `cgl_threshold` is where
    the pseudo-masks' confidence is thresholded (the masks themselves are full argmax).
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
    aug_scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5)   # random rescale factors before the crop
    num_workers: int = 2
    use_gpu: bool | None = None             # None: GPUs when the cluster has or can start them
    seed: int = 0

    def __post_init__(self):
        _choice("loss", self.loss, LOSSES)
        if not 0.0 <= self.cgl_threshold <= 1.0:
            raise ValueError(f"cgl_threshold must lie in [0, 1], got {self.cgl_threshold}")
        _at_least(self, ("epochs", "num_workers"), 1)
        _at_least(self, ("batch_size",), 2)
        _at_least(self, ("crop",), 8)
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not self.aug_scales or min(self.aug_scales) <= 0:
            raise ValueError(f"aug_scales must be positive numbers, got {self.aug_scales}")


@dataclass(frozen=True)
class LearnPromptsConfig:
    """Every setting of SemPLeS prompt learning; field names are the flags of ``jobs/learn_prompts.py``.

    For each class, `length` token embeddings are learned in ``a photo of P .`` so that
    the prompt matches the class's background (the image with the class's CLIP-ES CAM
    masked out) and not the class name (weight `text_weight`, SemPLeS's lambda). The
    CAMs come from `model` with its own label settings. `lr` is scaled by
    ``batch_size / 512`` as the SemPLeS code scales it; AdamW with a cosine decay.
    `output` holds the Ray Train run (re-runs resume) and ``prompts.safetensors``.
    """

    input: str | None = None                # None: 400 generated toy-world train images
    output: str = "outputs/prompts"
    labelset: str = "toyworld"
    model: str = TOYCLIP
    pretrained: str | None = None
    limit: int | None = None
    length: int = 30                        # tokens per prompt; capped by the text context
    text_weight: float = 0.02               # lambda: weight of the push away from the class text
    lr: float = 0.1                         # before the batch/512 scaling
    weight_decay: float = 0.0
    batch_size: int = 128                   # (image, class) pairs per step, over all workers
    epochs: int = 60
    num_workers: int = 1
    use_gpu: bool | None = None             # None: GPUs when the cluster has or can start them
    seed: int = 0

    def __post_init__(self):
        _at_least(self, ("length", "batch_size", "epochs", "num_workers"), 1)
        if self.lr <= 0 or self.text_weight < 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be positive and text_weight, weight_decay non-negative, got "
                             f"{self.lr}, {self.text_weight}, {self.weight_decay}")


# ------------------------------------------------------------------ prediction


@dataclass(frozen=True)
class PredictConfig:
    """Every setting of a prediction run; field names are the flags of ``jobs/predict.py``.

    `checkpoint` is a ``model.pt``, a checkpoint folder, or a training output folder
    (then its best checkpoint by val mIoU). Flags that mean the same as the
    labelling job's have its names.
    """

    checkpoint: str | None = None
    input: str | None = None
    output: str = "outputs/predictions"
    png_dir: str | None = None
    batch_size: int = 16
    concurrency: tuple[int, int] = (1, 1)
    num_gpus: float | None = None
    num_cpus: float = 1.0
    rows_per_file: int = 4096
    max_pixels: int = 50_000_000

    def __post_init__(self):
        if self.checkpoint is None or self.input is None:
            raise ValueError("prediction needs --checkpoint (a model.pt, checkpoint folder or training output) "
                             "and --input SOURCE")
        object.__setattr__(self, "concurrency", parse_concurrency(self.concurrency))
        lo, hi = self.concurrency
        if not 1 <= lo <= hi:
            raise ValueError(f"concurrency {lo},{hi} is not a range; give MIN,MAX with 1 <= MIN <= MAX")
        _at_least(self, ("batch_size", "rows_per_file"), 1)


# ------------------------------------------------------------------ sweeps


@dataclass(frozen=True)
class SweepConfig:
    """Every setting of a Ray Tune sweep; field names are the flags of ``jobs/tune.py``.

    ``kind: labels`` searches the labelling settings on `input`, a dev source with
    masks (default: 200 generated toy val images); ``kind: train`` searches training
    settings, `input` being the labelling job's Parquet output and `val` the
    validation source, as for ``jobs/train.py``. `space` is a YAML search space
    (default: the one shipped for the kind). `config` is a settings file the trials
    start from: a labelling ``--config`` (labels) or a training one (train).
    """

    kind: str = "labels"
    input: str | None = None
    val: str | None = None
    output: str = "outputs/sweep"
    space: str | None = None
    config: str | None = None
    model: str = TOYCLIP
    pretrained: str | None = None
    labelset: str = "toyworld"
    method: str = "clip-es"
    limit: int = 200                        # dev images (labels)
    searcher: str = "optuna"
    num_samples: int = 32
    max_concurrent: int = 2
    time_budget_s: float | None = None
    seed: int = 0
    cam_cache: bool = True                  # labels: reuse CAMs across trials that share CAM-level settings
    save_to_model: bool = False             # labels: also write the best settings as the model's label_config.yaml
    num_workers: int = 1                    # train: Ray Train workers per trial

    def __post_init__(self):
        _choice("kind", self.kind, SWEEP_KINDS)
        _choice("searcher", self.searcher, SEARCHERS)
        _at_least(self, ("limit", "num_samples", "max_concurrent", "num_workers"), 1)
        if self.save_to_model and not self.model.startswith(LOCAL_DIR):
            raise ValueError(f"save_to_model writes label_config.yaml beside a local-dir: model's weights; "
                             f"{self.model!r} is not one")


# ------------------------------------------------------------------ methods


# The built-in ``--method``s and their settings classes: the keys of ``wsss_ray.cam.CAM_METHODS``,
# whose classes name these as their ``config_class``. Kept here so that a job's driver checks its
# settings without importing torch.
METHOD_CONFIGS: dict[str, type] = {"clip-es": ClipESConfig, "freeseg": FreeSegConfig, "semples": SemplesConfig}


def registered_methods(load: bool = False) -> dict[str, type]:
    """Every ``--method`` -> its settings class: the built-ins, plus methods added to ``wsss_ray.cam.CAM_METHODS``.

    The registry module imports torch, so it is read only once something has imported
    it, or with `load` (a name that is not built in is looked up there). A driver that
    runs a built-in method never imports torch.
    """
    cam = sys.modules.get("wsss_ray.cam")
    if cam is None and load:
        import wsss_ray.cam as cam
    added = {} if cam is None else {m: c.config_class for m, c in cam.CAM_METHODS.items()}
    return {**METHOD_CONFIGS, **added}


def method_key(method: str) -> str:
    """The section of a method's settings in files and params: ``clip-es`` -> ``clip_es``."""
    return method.replace("-", "_")


def method_config_class(method: str) -> type:
    """The settings class of a registered CAM method; a miss lists the registered names."""
    methods = registered_methods()
    if method not in methods:
        methods = registered_methods(load=True)
    if method not in methods:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(map(repr, sorted(methods)))}")
    return methods[method]


def _method_sections(names: set[str] = frozenset()) -> dict[str, str]:
    """Settings section -> method, loading the full registry when `names` hold a section not built in."""
    sections = {method_key(m): m for m in registered_methods()}
    if set(names) - set(sections) - set(JOB_KEYS) - {"post"}:
        sections = {method_key(m): m for m in registered_methods(load=True)}
    return sections


# ------------------------------------------------------------------ building from mappings


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _reject_unknown(d: Mapping, known, what: str) -> None:
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {sorted(known)}")


def build(cls: type, d: Mapping | None, base: Any = None, what: str | None = None) -> Any:
    """Overlay the mapping `d` on `base` (default: ``cls()``), recursing into nested dataclasses.

    Lists become tuples where the field is a tuple; unknown keys are errors naming `what`.
    """
    base = cls() if base is None else base
    if d is None:
        return base
    if not isinstance(d, Mapping):
        raise ValueError(f"{what or cls.__name__} must be a mapping of settings, got {d!r}")
    fields = _fields(cls)
    _reject_unknown(d, fields, f"{what or cls.__name__} settings")
    changes = {}
    for key, value in d.items():
        current = getattr(base, key)
        if dataclasses.is_dataclass(current) and not isinstance(current, type):
            value = build(type(current), value, current, f"{what}.{key}" if what else key)
        elif "tuple" in str(fields[key].type) and isinstance(value, (list, str)):
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


JOB_KEYS = tuple(f for f in _fields(LabelJobConfig) if f not in ("post", "method_config"))
LABEL_KEYS = ("method", "post")  # with the method sections: what a model's label_config.yaml may hold


def label_job_config(d: Mapping) -> LabelJobConfig:
    """A LabelJobConfig from one nested mapping (job keys, ``post``, method sections)."""
    d = unflatten(d)
    sections = _method_sections(set(d))
    method_config_class(d.get("method", LabelJobConfig.method))  # an unknown --method, named before any section
    _reject_unknown(d, set(JOB_KEYS) | {"post"} | set(sections), "settings")
    job = {k: d[k] for k in JOB_KEYS if k in d}
    if "concurrency" in job:
        job["concurrency"] = parse_concurrency(job["concurrency"])
    method = job.get("method", LabelJobConfig.method)
    method_config = None
    for key, name in sections.items():
        if key in d:  # every section given is checked, the selected method's is used
            built = build(method_config_class(name), d[key], what=key)
            method_config = built if name == method else method_config
    try:
        return LabelJobConfig(**job, post=build(PostConfig, d.get("post"), what="post"),
                              method_config=method_config)
    except TypeError as e:
        raise ValueError(f"bad settings: {e}") from None


def read_mapping(path: str | Path) -> dict:
    """A YAML file of settings as a dict; anything but a mapping is an error naming the file."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of settings, e.g. 'post: {{bg_power: 1}}'")
    return data


def model_folder(model: str) -> Path | None:
    """The local folder of a model spec (bundled ``toyclip`` or ``local-dir:PATH``), else None."""
    if model == TOYCLIP:
        return Path(str(resources.files("wsss_ray").joinpath("weights", TOYCLIP)))
    if model.startswith(LOCAL_DIR):
        return Path(model[len(LOCAL_DIR):])
    return None


def model_settings(model: str) -> dict:
    """The label settings a model ships beside its weights (``label_config.yaml``), or {}.

    They may set the method, its section and ``post``; nothing about the job's I/O.
    """
    folder = model_folder(model)
    path = folder / MODEL_SETTINGS_FILE if folder else None
    if path is None or not path.is_file():
        return {}
    d = unflatten(read_mapping(path))
    _reject_unknown(d, set(LABEL_KEYS) | set(_method_sections()), f"settings in {path}")
    return d


def resolve_label_job(settings: Mapping, config_file: str | Path | None = None) -> LabelJobConfig:
    """The run's settings: defaults < the model's label_config.yaml < `config_file` < `settings` (flags)."""
    given = merge(read_mapping(config_file) if config_file else {}, settings)
    model = given.get("model", LabelJobConfig.model)
    return label_job_config(merge(model_settings(model), given))


def resolve_predict(settings: Mapping, config_file: str | Path | None = None) -> PredictConfig:
    """The run's settings: defaults < `config_file` < `settings` (the flags given)."""
    d = merge(read_mapping(config_file) if config_file else {}, settings)
    _reject_unknown(d, _fields(PredictConfig), "prediction settings")
    return PredictConfig(**d)


def resolve_sweep(settings: Mapping, config_file: str | Path | None = None) -> SweepConfig:
    """The sweep's settings: defaults < `config_file` < `settings` (the flags given)."""
    return build(SweepConfig, merge(read_mapping(config_file) if config_file else {}, settings), what="sweep")


def resolve_learn_prompts(settings: Mapping, config_file: str | Path | None = None) -> LearnPromptsConfig:
    """The run's settings: defaults < `config_file` < `settings` (the flags given)."""
    return build(LearnPromptsConfig, merge(read_mapping(config_file) if config_file else {}, settings),
                 what="prompt learning")


def resolve_train(settings: Mapping, config_file: str | Path | None = None) -> TrainConfig:
    """The run's settings: defaults < `config_file` < `settings` (the flags given)."""
    return build(TrainConfig, merge(read_mapping(config_file) if config_file else {}, settings), what="training")


# ------------------------------------------------------------------ to params and files


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


def settings_dict(config: LabelJobConfig, label_only: bool = False) -> dict:
    """The nested mapping a ``--config`` file holds for `config` (the method's section by its key).

    ``label_only`` keeps only what a model's label_config.yaml may hold (method, its section, post).
    """
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        return list(v) if isinstance(v, tuple) else v

    out = {} if label_only else {k: plain(getattr(config, k)) for k in JOB_KEYS}
    out.update(method=config.method, post=plain(config.post))
    out[method_key(config.method)] = plain(config.method_config)
    return out


def params(config: LabelJobConfig) -> dict:
    """Every setting under its dotted name (``clip_es.caa``, ``post.crf.iters``): MLflow params, sweep keys."""
    return flatten(settings_dict(config))


def label_keys(config: LabelJobConfig) -> tuple[list[str], list[str]]:
    """(CAM-level, post-level) dotted names: changing only post-level ones leaves the CAMs unchanged."""
    p = params(config)
    cam_prefix = method_key(config.method) + "."
    return ([k for k in p if k.startswith(cam_prefix)], [k for k in p if k.startswith("post.")])


def write_settings(config: LabelJobConfig, path: str | Path, label_only: bool = False) -> Path:
    """Write `config` as a YAML settings file (``--config`` input, or a model's label_config.yaml)."""
    from wsss_ray.files import atomic_write

    text = yaml.safe_dump(settings_dict(config, label_only), sort_keys=False)
    atomic_write(str(path), text.encode())
    return Path(path)


# ------------------------------------------------------------------ command lines


def parse_settings(parser, argv: list[str] | None, resolve, tracked: bool = True,
                   config_help: str = "YAML of settings (flag names with underscores); flags given override it"):
    """Parse a job's flags (adding ``--config`` and ``--mlflow-uri``) into (settings, mlflow_uri).

    Every other flag defaults to None so that only the flags given override the
    ``--config`` file; flag destinations may be dotted names (``clip_es.caa``).
    `resolve` turns them into the job's settings object; its errors exit like
    argparse's own, with the one-sentence message.
    """
    parser.add_argument("--config", help=config_help)
    if tracked:
        parser.add_argument("--mlflow-uri", help="MLflow tracking URI (default: sqlite store outputs/mlflow.db)")
    a = vars(parser.parse_args(argv))
    config_file, mlflow_uri = a.pop("config"), a.pop("mlflow_uri", None)
    try:
        return resolve({k: v for k, v in a.items() if v is not None}, config_file), mlflow_uri
    except (OSError, ValueError, TypeError) as e:
        parser.error(str(e))
