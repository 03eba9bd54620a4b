"""The labelling job's settings: the CRF, the post-processing every method shares, the job,
and the model's own ``label_config.yaml`` layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from wsss_ray.config.layers import (at_least, build, choice, concurrency_range, fields, flatten, merge,
                                    parse_concurrency, plain, read_mapping, reject_unknown, side, unflatten)
from wsss_ray.config.methods import method_config_class, method_entry, method_key, method_sections

CRF_BACKENDS = ("torch", "pydensecrf", "auto")
CRF_FINAL_STEPS = ("marginals", "messages")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LABEL_MODES = ("given", "missing", "auto")   # where an item's image-level labels come from (--labels)
TAGGER_KINDS = ("tagclip", "global")

TOYCLIP = "toyclip"
LOCAL_DIR = "local-dir:"
MODEL_SETTINGS_FILE = "label_config.yaml"


@dataclass(frozen=True)
class CrfConfig:
    """Dense-CRF kernels (positions in pixels, colours in 0..255); ``iters: 0`` turns the CRF off.

    Kernel defaults are the CLIP-ES reference's (deeplab-pytorch's kernel: gaussian 1/3,
    bilateral 67/3/4). Two backends run the same model (``wsss_ray.crf``): ``torch``
    (the permutohedral lattice in torch, on any device; on a grid ``downsample`` times
    coarser it is about 5x faster than pydensecrf on a CPU at VOC size) and
    ``pydensecrf`` (the reference implementation). ``auto`` (the default) keeps the
    reference's confident pixels on every device: pydensecrf on a CPU, the torch lattice at
    full resolution on a GPU (``wsss_ray.crf.on_device``). The coarse grid's argmax agrees
    with pydensecrf's, but its >= 0.95 set does not (docs/RESULTS.md, "Which pixels are
    confident"). On the 44 sample photographs with CAM-like masks a lighter
    kernel (1/1, 20/10/1) scores a little higher (``benchmarks/crf_backends.py --kernels``);
    on a larger set of 450 photos the reference kernel gained more (+4.3 mIoU
    against +2.3), so the reference is the default. Tune it per collection.
    """

    iters: int = 10
    gauss_sxy: float = 1.0          # the smoothness kernel's position scale, in pixels
    gauss_compat: float = 3.0       # its weight
    bilateral_sxy: float = 67.0     # the appearance kernel's position scale, in pixels
    bilateral_srgb: float = 3.0     # its colour scale (0..255)
    bilateral_compat: float = 4.0   # its weight
    backend: str = "auto"       # auto: pydensecrf on a CPU, torch at full resolution on a GPU; torch: the
                                # permutohedral lattice on the caller's device; pydensecrf: the reference
    downsample: int = 4         # torch: mean field on a grid up to this many times coarser (1: full resolution)
    final_step: str = "marginals"  # torch on a coarse grid: upsample the marginals, or the last messages
    max_side: int | None = 640  # the CRF runs on the image shrunk to this long side (wsss_ray.budget); None: any size

    def __post_init__(self):
        at_least(self, ("iters",), 0)
        at_least(self, ("downsample",), 1)
        side("post.crf.max_side", self.max_side)
        if self.backend not in CRF_BACKENDS:
            raise ValueError(f"crf backend must be one of {CRF_BACKENDS}, got {self.backend!r}")
        choice("post.crf.final_step", self.final_step, CRF_FINAL_STEPS)


# The signals of wsss_ray.quality. Per image; ``labels`` is the number of image-level labels and
# the ``label_*`` ones summarise the per-label signals over the image's labels.
IMAGE_SIGNALS = ("confidence_mean", "confidence_above_0.95", "margin_mean", "entropy_mean", "crf_changed",
                 "background", "labels", "missing_labels", "label_prob_mean", "label_agreement",
                 "label_confidence_min")
# Per label k, whose region is where the CRF's argmax is k.
LABEL_SIGNALS = ("area", "missing", "confidence_in_region", "margin_in_region", "kept_by_crf", "prob_mean",
                 "agreement")


def _fitted(**weights: float) -> Any:
    return field(default_factory=lambda: dict(weights))


@dataclass(frozen=True)
class QualityConfig:
    """The linear models of ``quality`` (per mask) and ``label_quality`` (per label) over the
    signals of ``wsss_ray.quality``: a weight per signal and a bias, clipped to [0, 1].

    The defaults were fitted on the toy world's val split with toyclip
    (``benchmarks/quality_score.py``; docs/RESULTS.md, "Which masks are wrong: the quality
    column"). They rank masks by how their probability maps look, which carries to other
    models as a ranking more than as a calibrated mIoU; refit them (the benchmark prints
    this form) on masks with ground truth of your own.
    """

    weights: dict = _fitted(**{
        "confidence_mean": -19.42248, "confidence_above_0.95": 4.32411, "margin_mean": 3.0998,
        "entropy_mean": -0.35558, "crf_changed": 0.48509, "background": 0.54812, "labels": -0.12862,
        "missing_labels": -0.20371, "label_prob_mean": -1.33964, "label_agreement": 0.24046,
        "label_confidence_min": 0.10113})
    bias: float = 12.40125
    label_weights: dict = _fitted(
        area=-1.22576, missing=-0.14446, confidence_in_region=0.39026, margin_in_region=0.09667,
        kept_by_crf=-0.44164, prob_mean=-0.35344, agreement=0.54786)
    label_bias: float = 0.22357

    def __post_init__(self):
        reject_unknown(self.weights, IMAGE_SIGNALS, "post.quality.weights signals")
        reject_unknown(self.label_weights, LABEL_SIGNALS, "post.quality.label_weights signals")


@dataclass(frozen=True)
class PostConfig:
    """Everything after the CAMs, shared by every CAM method: background score and CRF.

    The background score is ``(1 - max_k cam_k) ** bg_power`` (CLIP-ES), or the
    constant `bg_threshold` when given. The mask is the per-pixel argmax; the
    confidence (max probability) is stored beside it and thresholds are applied by
    whoever uses it (CGL training, ``export --min-confidence``). ``quality`` scores
    each mask and each of its labels (:class:`QualityConfig`).
    """

    bg_power: float = 1.0                   # the background is (1 - max_k cam_k) ** bg_power
    bg_threshold: float | None = None       # a constant background score instead (None: bg_power's)
    crf: CrfConfig = field(default_factory=CrfConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)

    def __post_init__(self):
        if self.bg_power <= 0:
            raise ValueError(f"bg_power must be positive, got {self.bg_power}")
        if self.bg_threshold is not None and not 0 <= self.bg_threshold <= 1:
            raise ValueError(f"bg_threshold must lie in [0, 1] or be null, got {self.bg_threshold}")


@dataclass(frozen=True)
class TaggerConfig:
    """The tagger that proposes an image's labels when it has none (``--labels missing|auto``).

    ``tagclip`` (TagCLIP's local-to-global idea, ``wsss_ray.tagger``): the image's
    global classification, patch-level classification refined by the attention of
    the earlier blocks (`refine`), and class-wise reidentification (`reidentify`): each
    of the `candidates` best classes is classified again on its own region, cut out of
    the token grid (patches scoring at least `region` of the class's best patch).
    The score is ``global_weight * global + (1 - global_weight) * local``, the local
    part being the reidentification score (or the refined patches' maximum).
    ``global``: the global classification only, the baseline. `flip` averages the
    global classification with that of the mirrored image. A class whose score is
    at least `threshold` is a label, at most `top_k` of them (None: no cap). Scores
    are softmax probabilities over the classes and background words, so a good
    threshold depends on the model and the labelset: choose it with a ``tags`` sweep.

    `min_label_quality` checks proposed labels against the mask they make: a proposed
    label whose ``label_quality`` (``post.quality``) falls below it is dropped and the
    mask made again without it (0: off). The quality model is fitted on toyclip, so
    the default is off; toyclip's own settings turn it on.
    """

    kind: str = "tagclip"                    # tagclip (local-to-global) | global (the baseline)
    threshold: float = 0.3
    top_k: int | None = None                  # at most this many labels (None: no cap)
    templates: tuple[str, ...] | None = None  # None: the labelset's
    side: int | None = None                   # the long side the tagger's model sees (None: its native size)
    flip: bool = True                         # average with the mirrored image's global classification
    refine: bool = True                       # refine the patch classification by earlier blocks' attention
    reidentify: bool = True                   # classify each candidate again on its own region
    candidates: int = 4                       # the best classes reidentified
    region: float = 0.5                       # a candidate's region: patches at this share of its best patch
    global_weight: float = 0.5                # the global classification's share of the score
    min_label_quality: float = 0.0            # drop a proposed label whose label_quality is below (0: off)

    def __post_init__(self):
        choice("tagger.kind", self.kind, TAGGER_KINDS)
        side("tagger.side", self.side)
        at_least(self, ("candidates",), 1)
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"tagger.top_k must be at least 1 or null, got {self.top_k}")
        for name in ("threshold", "region", "global_weight", "min_label_quality"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"tagger.{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.templates is not None:
            object.__setattr__(self, "templates", tuple(self.templates))


@dataclass(frozen=True)
class LabelJobConfig:
    """Every setting of a pseudo-labelling run; field names are the job's flags.

    `method_config` is the settings object of `method` (its registry entry's); it is
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
    method: str = "excel"                   # ExCEL's training-free path; clip-es, semples, freeseg: see METHODS
    limit: int | None = None
    batch_size: int = 16
    concurrency: tuple[int, int] = (1, 1)   # (min, max) CAM actors; the pool autoscales between them
    num_gpus: float | None = None           # per CAM actor; None: 1 if the cluster has GPUs, else 0
    num_cpus: float = 1.0                   # per CAM actor; below 1 packs more actors onto a CPU-only node
    rows_per_file: int = 4096               # rows per Parquet file (the unit of resume)
    max_pixels: int = 50_000_000            # an image with more pixels is an error row (decompression bombs)
    precision: str = "auto"                 # the CAM model's autocast: auto = bf16 on CPUs with native bf16, else fp32
    labels: str = "missing"                 # given | missing (proposed where absent) | auto (always proposed)
    post: PostConfig = field(default_factory=PostConfig)
    tagger: TaggerConfig = field(default_factory=TaggerConfig)
    method_config: Any = None               # None: the method's defaults

    def __post_init__(self):
        concurrency_range(self.concurrency)
        if self.num_cpus <= 0:
            raise ValueError(f"num_cpus must be positive, got {self.num_cpus}")
        at_least(self, ("batch_size", "rows_per_file"), 1)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        choice("labels", self.labels, LABEL_MODES)
        cls = method_config_class(self.method)
        if self.method_config is None:
            object.__setattr__(self, "method_config", cls())
        elif type(self.method_config) is not cls:
            raise TypeError(f"method {self.method!r} takes a {cls.__name__}, got {type(self.method_config).__name__}")
        getattr(self.method_config, "check_complete", lambda: None)()


SECTIONS = ("post", "tagger")  # the job's own settings sections; the method's section is the third
JOB_KEYS = tuple(f for f in fields(LabelJobConfig) if f not in (*SECTIONS, "method_config"))
LABEL_KEYS = ("method", *SECTIONS)  # with the method sections: what a model's label_config.yaml may hold


def label_job_config(d: Mapping) -> LabelJobConfig:
    """A LabelJobConfig from one nested mapping (job keys, ``post``, method sections)."""
    d = unflatten(d)
    sections = method_sections()
    method_entry(d.get("method", LabelJobConfig.method))  # an unknown --method, named before any section
    reject_unknown(d, set(JOB_KEYS) | set(SECTIONS) | set(sections), "settings")
    job = {k: d[k] for k in JOB_KEYS if k in d}
    if "concurrency" in job:
        job["concurrency"] = parse_concurrency(job["concurrency"])
    selected = job.get("method", LabelJobConfig.method)
    method_config = None
    for key, name in sections.items():
        if key in d:  # every section given is checked, the selected method's is used
            built = build(method_config_class(name), d[key], what=key)
            method_config = built if name == selected else method_config
    try:
        return LabelJobConfig(**job, post=build(PostConfig, d.get("post"), what="post"),
                              tagger=build(TaggerConfig, d.get("tagger"), what="tagger"), method_config=method_config)
    except TypeError as e:
        raise ValueError(f"bad settings: {e}") from None


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
    reject_unknown(d, set(LABEL_KEYS) | set(method_sections()), f"settings in {path}")
    return d


def resolve_label_job(settings: Mapping, config_file: str | Path | None = None) -> LabelJobConfig:
    """The run's settings: defaults < the model's label_config.yaml < `config_file` < `settings` (flags)."""
    given = merge(read_mapping(config_file) if config_file else {}, settings)
    model = given.get("model", LabelJobConfig.model)
    return label_job_config(merge(model_settings(model), given))


def settings_dict(config: LabelJobConfig, label_only: bool = False) -> dict:
    """The nested mapping a ``--config`` file holds for `config` (the method's section by its key).

    ``label_only`` keeps only what a model's label_config.yaml may hold (method, its section, post, tagger).
    """
    out = {} if label_only else {k: plain(getattr(config, k)) for k in JOB_KEYS}
    out.update(method=config.method, post=plain(config.post), tagger=plain(config.tagger))
    out[method_key(config.method)] = plain(config.method_config)
    return out


def params(config: LabelJobConfig) -> dict:
    """Every setting under its dotted name (``clip_es.caa``, ``post.crf.iters``): MLflow params, sweep keys."""
    return flatten(settings_dict(config))


def label_keys(config: LabelJobConfig) -> tuple[list[str], list[str]]:
    """(CAM-level, post-level) dotted names: changing only post-level ones leaves the CAMs unchanged.

    The CAM level holds the method's section and, since proposed labels decide which
    CAMs are made, ``labels`` and the tagger's settings.
    """
    p = params(config)
    cam = (method_key(config.method) + ".", "tagger.")
    return ([k for k in p if k.startswith(cam) or k == "labels"], [k for k in p if k.startswith("post.")])


def write_settings(config: LabelJobConfig, path: str | Path, label_only: bool = False) -> Path:
    """Write `config` as a YAML settings file (``--config`` input, or a model's label_config.yaml)."""
    from wsss_ray.store import atomic_write  # pyarrow: only when writing

    text = yaml.safe_dump(settings_dict(config, label_only), sort_keys=False)
    atomic_write(str(path), text.encode())
    return Path(path)
