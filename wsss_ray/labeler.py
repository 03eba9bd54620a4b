"""The labeller: decoded images + image-level labels -> CAMs -> pseudo-masks + confidence.

The public Python API, without Ray. One object owns a CAM method (with its loaded
CLIP and encoded prompts) and the shared post-processing settings, so a notebook,
another tool and the job's CAM actors all call the same thing, at two levels:

    labeler = Labeler.from_spec("toyclip", "toyworld")               # the model's own settings
    cams = labeler.cams(images, [["cow", "sheep"], ["boat"]])         # per image: KxHxW float32 in [0, 1]
    results = labeler.label(images, [["cow", "sheep"], ["boat"]])     # per image: LabelResult(mask, confidence, cams)
    tags = labeler.tags(images)                                       # per image: Tags(labels, scores, class_scores)
    results = labeler.label(images)                                   # labels proposed by the tagger (None: per image)

    Labeler.from_spec("ViT-B-16", "voc", method="clip-es", settings={"caa": False},
                      post={"bg_power": 1}, pretrained="/weights/ViT-B-16.pt")

``precision`` is the autocast the CAM model runs under (``auto``: bf16 on a CPU with
native bf16 instructions, float32 on other CPUs; on a GPU, the fastest of bf16, fp16 and
float32 whose results agree with float32's, measured when the labeller is built:
``wsss_ray.precision``); the CAM arithmetic itself stays float32.
Nothing here imports Ray.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from wsss_ray import post
from wsss_ray.budget import decode_side, fit_side, shrink
from wsss_ray.cam import CamMethod
from wsss_ray.clip import load_clip
from wsss_ray.config import (PRECISIONS, CrfConfig, LabelJobConfig, Method, PostConfig, TaggerConfig, method_entry,
                             method_key, model_settings, resolve_label_job)
from wsss_ray.crf import Refined, crf_within_budget, full_size_mask, on_device, refine, refine_scored, score
from wsss_ray.labelset import Labelset, load_labelset
from wsss_ray.masks import cams_to_probs
from wsss_ray.tagger import Tagger, Tags

log = logging.getLogger(__name__)


@dataclass
class LabelResult:
    """Per image: uint8 mask (0 bg, i = class i; the argmax) and uint8 confidence 0..255
    (max probability), both at the image's size, and the CAMs of its labels (float32,
    [0,1]) at the size the labeller worked at: the image's own, or within the size
    budget for a larger image (see :meth:`Labeler.label`); the mask's ``quality`` and its
    ``label_quality`` per label (``wsss_ray.quality``), as the job writes them; the labels used
    and, when the tagger proposed them, their scores (else None)."""

    mask: np.ndarray
    confidence: np.ndarray
    cams: np.ndarray
    quality: float
    label_quality: list[float]
    labels: list[str]
    label_scores: list[float] | None = None


def class_ids(labelset: Labelset, labels: list[str]) -> list[int]:
    """0-based labelset indices of an image's labels, deduplicated, in the given order.

    A label that is not in the labelset raises KeyError with a message naming it.
    """
    return labelset.class_ids(labels)


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype `precision` means on `device` (None: float32, no autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        native_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        precision = "bf16" if torch.device(device).type == "cpu" and native_bf16 else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def model_autocast(precision: str, device: torch.device | str):
    """A context running the model in `precision` on `device` (see :func:`autocast_dtype`)."""
    dtype = autocast_dtype(precision, device)
    return torch.autocast(torch.device(device).type, dtype=dtype) if dtype else contextlib.nullcontext()


def to_probs(cams: np.ndarray, post: PostConfig) -> np.ndarray:
    """KxHxW CAMs -> (1+K)xHxW probabilities, background first (the background score of `post`)."""
    return cams_to_probs(cams, post.bg_power, post.bg_threshold)


@dataclass
class Verified:
    """The CRF of an image's proposed labels after the weak ones were dropped: its marginals over
    `small` (the image within the CRF's budget), their (quality, label_quality), and the
    positions of the labels kept."""

    marginals: np.ndarray
    small: np.ndarray
    scores: tuple[float, list[float]]
    kept: list[int]


def verify_labels(image: np.ndarray, cams: np.ndarray, post: PostConfig, min_quality: float,
                  device: str = "cpu") -> Verified:
    """Check proposed labels against the mask they make: the dense CRF of the CAMs' probabilities,
    and, if a label's ``label_quality`` is below `min_quality`, the CRF again without those labels.

    A wrong label costs a mask more than a missing one (its CAM takes pixels from the right
    classes; docs/RESULTS.md), so a label the tagger proposed must also hold up in the mask.
    """
    kept = list(range(len(cams)))
    while True:
        probs = to_probs(cams[kept], post)
        marginals, small = crf_within_budget(image, probs, post.crf, device)
        scores = score(probs, marginals, post.quality)
        weak = [k for k, q in zip(kept, scores[1]) if q < min_quality]
        if not weak:
            return Verified(marginals, small, scores, kept)
        kept = [k for k in kept if k not in weak]


class Labeler:
    """A CAM method plus post-processing: labels batches of uint8 HxWx3 RGB images; its tagger
    (``wsss_ray.tagger``, built on the method's CLIP at first use) proposes labels for images without."""

    def __init__(self, method: CamMethod, post: PostConfig = PostConfig(), precision: str = "auto",
                 tagger: TaggerConfig = TaggerConfig()):
        autocast_dtype(precision, "cpu")  # fail early on a wrong name
        self.method = method
        self.post = post
        self.precision = precision
        self.tagger_config = tagger
        self._tagger: Tagger | None = None
        self.post_on_device = self.method.device.type != "cpu"  # the steps after the CAMs run beside them

    @classmethod
    def from_config(cls, config: LabelJobConfig, device: str = "cpu", entry: Method | None = None) -> "Labeler":
        """Load the model and build the method a job's settings name (`entry`, the registry's
        entry for it, when it was registered in another process: the driver's)."""
        method_class = (entry or method_entry(config.method)).load()
        clip = load_clip(config.model, config.pretrained, device)
        labeler = cls(method_class(config.method_config, clip, load_labelset(config.labelset)), config.post,
                      config.precision, config.tagger)
        labeler.settle_precision()
        return labeler

    @classmethod
    def from_spec(cls, model: str = "toyclip", labelset: str | Labelset = "toyworld", method: str | None = None,
                  settings: Mapping[str, Any] | None = None, post: Mapping[str, Any] | None = None,
                  pretrained: str | None = None, device: str = "cpu", precision: str = "auto",
                  tagger: Mapping[str, Any] | None = None) -> "Labeler":
        """A labeller for a model spec, a labelset and a method, settings resolved as the job does.

        Defaults come from the model's ``label_config.yaml`` when it ships one (``toyclip``
        does), else from the method's; `settings` (the method's, e.g. ``{"caa": False}``),
        `post` (``{"bg_power": 0.5, "crf": {"iters": 5}}``) and `tagger`
        (``{"threshold": 0.2}``) override them.
        """
        given: dict[str, Any] = {"model": model, "pretrained": pretrained, "post": dict(post or {}),
                                 "tagger": dict(tagger or {}), "precision": precision}
        if isinstance(labelset, str):
            given["labelset"] = labelset
        if method:
            given["method"] = method
        if settings:
            name = method or model_settings(model).get("method", LabelJobConfig.method)
            given[method_key(name)] = dict(settings)
        config = resolve_label_job(given)
        if isinstance(labelset, Labelset):
            clip = load_clip(model, pretrained, device)
            labeler = cls(method_entry(config.method).load()(config.method_config, clip, labelset), config.post,
                          config.precision, config.tagger)
            labeler.settle_precision()
            return labeler
        return cls.from_config(config, device)

    def settle_precision(self) -> str:
        """With ``precision: auto`` off a CPU, measure the candidates on the probe images and keep
        the fastest whose results agree with float32's (``wsss_ray.precision``); returns the precision."""
        from wsss_ray import precision

        if self.precision == "auto" and self.method.device.type != "cpu":
            trials = precision.measure(self)
            self.precision = precision.choose(trials)
            log.info("precision auto on %s: %s (%s)", self.method.device, self.precision,
                     ", ".join(f"{t.precision} {t.seconds * 1000:.1f} ms/img, r {t.agreement.cam_r:.4f}, "
                               f"masks {100 * t.agreement.masks:.2f} %" for t in trials))
        return self.precision

    @property
    def labelset(self) -> Labelset:
        return self.method.labelset

    def class_ids(self, labels: list[str]) -> list[int]:
        """0-based labelset indices of an image's labels, deduplicated, in the given order."""
        return class_ids(self.labelset, labels)

    @property
    def tagger(self) -> Tagger:
        """The tagger on the method's own CLIP (and its prompts, when the settings agree)."""
        if self._tagger is None:
            self._tagger = Tagger(self.tagger_config, self.method.clip, self.labelset)
        return self._tagger

    def tags(self, images: list[np.ndarray]) -> list[Tags]:
        """Per image, the labels the tagger proposes (best first) and their scores."""
        with model_autocast(self.precision, self.method.device):
            return self.tagger.tags(images)

    def cams(self, images: list[np.ndarray], labels: list[list[str]]) -> list[np.ndarray]:
        """Per image, KxHxW float32 CAMs in [0,1] at the image's own size (K = its distinct labels)."""
        return [c.cpu().numpy() for c in self.cam_tensors(images, labels)]

    def cam_tensors(self, images: list[np.ndarray], labels: list[list[str]]) -> list[torch.Tensor]:
        """:meth:`cams` as float32 tensors on the model's device."""
        with model_autocast(self.precision, self.method.device):
            return self.method.cam_tensors(images, [self.class_ids(l) for l in labels])

    @property
    def crf(self) -> CrfConfig:
        """The CRF settings as they run on the model's device (``wsss_ray.crf.on_device``)."""
        return on_device(self.post.crf, self.method.device)

    def fits_device(self, image: np.ndarray) -> bool:
        """Whether the steps after the CAMs run on the model's device for `image` (``wsss_ray.post``):
        with ``post_on_device`` (set off a CPU), the torch CRF backend (or none) and the image
        within the CRF's size budget."""
        crf = self.crf
        return (self.post_on_device and (crf.backend == "torch" or crf.iters == 0)
                and fit_side(*image.shape[:2], crf.max_side) == image.shape[:2])

    def masks_on_device(self, images: list[np.ndarray], cams: list[torch.Tensor],
                        labels: list[list[str]]) -> list[Refined]:
        """Per image (each within :meth:`fits_device`) and its CAMs on the model's device: the mask,
        confidence and quality scores made there (``wsss_ray.post``), brought over together."""
        dev, crf = self.method.device, self.crf
        done = [post.label_image(torch.from_numpy(np.require(image, requirements=["C", "W"])).to(dev), cam,
                                 self.class_ids(lab), self.post, crf)
                for image, cam, lab in zip(images, cams, labels)]
        return [Refined(*r) for r in post.to_host(done, self.post)]

    def probs(self, cams: list[np.ndarray]) -> list[np.ndarray]:
        """Per image, (1+K)xHxW probabilities (background first) from its CAMs."""
        return [to_probs(c, self.post) for c in cams]

    def label(self, images: list[np.ndarray], labels: list[list[str] | None] | None = None) -> list[LabelResult]:
        """Pseudo-masks and confidence maps for a batch of uint8 HxWx3 RGB images, as the job makes them.

        An image whose labels are None (or every image, when `labels` is None) gets the
        labels its tagger proposes, checked against their mask as the job checks them
        (``tagger.min_label_quality``, :func:`verify_labels`). An image larger than the size budget (the method's
        ``max_side`` and the CRF's, ``wsss_ray.budget``) is labelled shrunk to the larger
        of the two, and its mask and confidence brought back to its full size, so memory
        stays bounded.
        """
        labels = [None] * len(images) if labels is None else list(labels)
        side = decode_side(self.method.config, self.post.crf)
        working = [shrink(image, fit_side(*image.shape[:2], side)) for image in images]
        untagged = [i for i, given in enumerate(labels) if given is None]
        scores: dict[int, list[float]] = {}
        for i, tags in zip(untagged, self.tags([working[i] for i in untagged]) if untagged else []):
            labels[i], scores[i] = tags.labels, tags.scores
        tensors = self.cam_tensors(working, labels)
        cams = [c.cpu().numpy() for c in tensors]
        check = self.tagger_config.min_label_quality
        here = [i for i, image in enumerate(images)
                if not (i in scores and check) and working[i].shape == image.shape and self.fits_device(image)]
        made = dict(zip(here, self.masks_on_device([images[i] for i in here], [tensors[i] for i in here],
                                                   [labels[i] for i in here])))
        out = []
        for i, (image, small, lab, cam) in enumerate(zip(images, working, labels, cams)):
            if i in made:  # made on the model's device (off a CPU)
                mask, confidence, quality, label_quality = made[i]
            elif i in scores and check:  # proposed labels must hold up in their mask
                v = verify_labels(small, cam, self.post, check, self.method.device)
                lab, scores[i], cam = [lab[k] for k in v.kept], [scores[i][k] for k in v.kept], cam[v.kept]
                mask, confidence = full_size_mask(v.marginals, v.small, self.class_ids(lab), self.post, image)
                quality, label_quality = v.scores
            else:
                mask, confidence, quality, label_quality = refine_scored(small, to_probs(cam, self.post),
                                                                         self.class_ids(lab), self.post, image)
            out.append(LabelResult(mask, confidence, cam, quality, label_quality, list(lab), scores.get(i)))
        return out


__all__ = ["LabelResult", "Labeler", "refine"]  # refine: kept here for callers of its earlier home
