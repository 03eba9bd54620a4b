"""The settings of training a segmenter, of learning SemPLeS prompts, and of prediction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Mapping

from wsss_ray.config.label import TOYCLIP
from wsss_ray.config.layers import at_least, choice, concurrency_range, fields, given, parse_concurrency, reject_unknown

LOSSES = ("cgl", "ce")
REFINES = ("none", "crf")  # as wsss_ray.train.refine.REFINES
ARCHS = ("tiny", "clip", "deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50", "deeplabv3_resnet101",
         "lraspp_mobilenet_v3_large")  # the networks of wsss_ray.train.model.ARCHS


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a segmentation training run; field names are the flags of ``jobs/train.py``.

    `input` is the pseudo-label job's Parquet output; `val` a source with ground-truth
    masks (None with the toy world: a generated toy val split). `output` holds the Ray
    Train run (checkpoints) and is where a re-run resumes. `cgl_threshold` is where
    the pseudo-masks' confidence is thresholded (the masks themselves are full argmax).

    ``arch: clip`` trains a decoder on the frozen image tower of `model` / `pretrained`
    (the labelling job's specs; None: the model named in the input's rows), the last
    `unfreeze` blocks training too; `feature_blocks` last blocks feed the decoder, the
    tower sees the crops resized by `clip_scale`, and `feature_cache_mb` of memory per
    worker keeps frozen outputs of crops that repeat (``wsss_ray.train.clipseg``).

    Predictions (val every epoch, then ``jobs/predict.py`` from the checkpoint) subtract
    `background_offset` from the background logit (None: fitted every epoch on
    `calibration_images` training rows so predictions have their pseudo-masks'
    foreground share) and, with ``refine: crf``, pass through the dense CRF
    (``wsss_ray.train.refine``).
    """

    what: ClassVar[str] = "training"

    input: str = "outputs/pseudolabels"
    val: str | None = None
    output: str = "outputs/train"
    labelset: str = "toyworld"
    loss: str = "cgl"
    cgl_threshold: float = 0.95
    arch: str = "tiny"
    backbone_weights: str | None = None
    model: str | None = None                # arch clip: the CLIP (None: the input rows' model)
    pretrained: str | None = None
    unfreeze: int = 0
    feature_blocks: int = 4
    clip_scale: float = 1.0
    feature_cache_mb: float = 0.0
    background_offset: float | None = None  # None: fitted by prior matching every epoch
    refine: str = "crf"
    calibration_images: int = 200
    epochs: int = 10
    batch_size: int = 16                    # per worker
    lr: float = 0.003                       # Adam, poly decay over the epochs
    crop: int = 64
    aug_scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5)   # random rescale factors before the crop
    num_workers: int = 2
    use_gpu: bool | None = None             # None: GPUs when the cluster has or can start them
    seed: int = 0

    def __post_init__(self):
        choice("loss", self.loss, LOSSES)
        choice("arch", self.arch, ARCHS)
        choice("refine", self.refine, REFINES)
        if not 0.0 <= self.cgl_threshold <= 1.0:
            raise ValueError(f"cgl_threshold must lie in [0, 1], got {self.cgl_threshold}")
        at_least(self, ("epochs", "num_workers", "feature_blocks"), 1)
        at_least(self, ("unfreeze", "calibration_images"), 0)
        if self.clip_scale <= 0 or self.feature_cache_mb < 0:
            raise ValueError(f"clip_scale must be positive and feature_cache_mb non-negative, got "
                             f"{self.clip_scale}, {self.feature_cache_mb}")
        at_least(self, ("batch_size",), 2)
        at_least(self, ("crop",), 8)
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

    what: ClassVar[str] = "prompt learning"

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
        at_least(self, ("length", "batch_size", "epochs", "num_workers"), 1)
        if self.lr <= 0 or self.text_weight < 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be positive and text_weight, weight_decay non-negative, got "
                             f"{self.lr}, {self.text_weight}, {self.weight_decay}")


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
        concurrency_range(self.concurrency)
        at_least(self, ("batch_size", "rows_per_file"), 1)


def resolve_predict(settings: Mapping, config_file: str | Path | None = None) -> PredictConfig:
    """The run's settings: defaults < `config_file` < `settings` (the flags given)."""
    d = given(settings, config_file)
    reject_unknown(d, fields(PredictConfig), "prediction settings")
    return PredictConfig(**d)  # no defaults to overlay on: checkpoint and input are required
