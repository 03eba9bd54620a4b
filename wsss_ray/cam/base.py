"""What a CAM method is: a class built from its settings, a loaded CLIP and a labelset.

A method turns decoded images and their class ids into per-image KxHxW CAMs in
[0, 1] at the image's own size. Everything after that (background score, CRF,
mask, confidence) is shared by all methods (``wsss_ray.labeler``). Methods are
pure torch: no Ray, no MLflow.

To add one: write a module with a frozen settings dataclass and a subclass of
:class:`CamMethod` whose ``config_class`` is that dataclass and that implements
:meth:`CamMethod.cams` (numpy in, numpy out), or, to keep the CAMs on the model's device,
``_grid_cams`` (a batch of model inputs to grid-size maps; the settings then have
``scales``) or :meth:`CamMethod.cam_tensors`; then add one line to
``wsss_ray.config.METHODS``: ``"my-method": Method("pkg.mod:MyConfig", "pkg.mod:MyMethod")``.
``--method NAME`` selects it, its settings go under ``NAME`` (``-`` written ``_``)
in ``--config`` files, MLflow params and sweeps.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from wsss_ray.budget import fit_side, shrink
from wsss_ray.cam.prompts import class_texts, text_features
from wsss_ray.clip import LoadedClip
from wsss_ray.labelset import Labelset


CPU_TOKENS_PER_PASS = 1024  # patch tokens per model pass on a CPU (see CamMethod.multiscale)


class CamMethod:
    """Base class of the CAM methods; subclasses set ``config_class`` and implement :meth:`cams`,
    or ``_grid_cams`` / :meth:`cam_tensors` so the CAMs stay on the model's device."""

    config_class: ClassVar[type]

    def __init__(self, config, clip: LoadedClip, labelset: Labelset):
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, "
                            f"got {type(config).__name__}")
        self.config = config
        self.clip = clip
        self.labelset = labelset

    def cams(self, images: list[np.ndarray], class_ids: list[list[int]]) -> list[np.ndarray]:
        """Per image, KxHxW float32 CAMs in [0, 1] at the image's own size.

        Args:
            images: uint8 HxWx3 RGB arrays (sizes may differ).
            class_ids: per image, its K distinct 0-based labelset indices (K may be 0).
        """
        return [c.cpu().numpy() for c in self.cam_tensors(images, class_ids)]

    def cam_tensors(self, images: list[np.ndarray], class_ids: list[list[int]]) -> list[torch.Tensor]:
        """:meth:`cams` as float32 tensors on the model's device, for the steps that follow there."""
        if type(self).cams is not CamMethod.cams:  # a method written against the numpy API
            return [torch.as_tensor(c, dtype=torch.float32).to(self.device) for c in self.cams(images, class_ids)]
        return self.multiscale(images, class_ids, self.config.scales, self._grid_cams)

    def _grid_cams(self, x: torch.Tensor, ids: list[list[int]]) -> list[torch.Tensor]:
        """Per image of a batch of model inputs, its Kxghxgw maps in [0, 1] at grid size."""
        raise NotImplementedError

    @classmethod
    def prompts(cls, config, labelset: Labelset) -> list[str]:
        """The text prompts the method will encode for `labelset` (logged beside each run)."""
        return []

    def _images_per_pass(self, size: tuple[int, int], images: int) -> int:
        if self.device.type != "cpu":
            return images
        return max(1, CPU_TOKENS_PER_PASS // ((size[0] // self.clip.patch_size) * (size[1] // self.clip.patch_size)))

    def input_size(self, height: int, width: int, scale: float) -> tuple[int, int]:
        """The model input's size for an image of `height` x `width` at `scale` (CLIP-ES: its own
        size times the scale, rounded up to a patch multiple)."""
        from wsss_ray.cam.gradcam import patch_aligned_size

        return patch_aligned_size(height, width, self.clip.patch_size, scale)

    def model_input(self, pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """uint8 HxWx3 pixels on the device -> the normalised 3xH'xW' model input at `size`."""
        from wsss_ray.cam.gradcam import to_model_input

        return to_model_input(pixels, size, self.clip.mean, self.clip.std)

    @property
    def max_side(self) -> int | None:
        """The model-input budget: the long side the model sees at scale 1 (None: the image's own)."""
        return getattr(self.config, "max_side", None)

    @property
    def device(self) -> torch.device:
        return next(self.clip.model.parameters()).device

    def multiscale(self, images: list[np.ndarray], class_ids: list[list[int]], scales: tuple[float, ...],
                   grid_cams, normalise: bool = True) -> list[torch.Tensor]:
        """Per image, KxHxW CAMs in [0, 1] on the model's device: the sum over `scales` of
        upsampled grid CAMs, min-max normalised (CLIP-ES), or, with `normalise` False, their
        mean (ExCEL: a map upsampled from one scale is used as it is).

        ``grid_cams(x, ids)`` maps a batch of same-size model inputs (Bx3xH'xW') and their
        class ids to per-image Kxghxgw maps in [0, 1]. Images are grouped by their
        patch-aligned size at each scale, so a batch may mix sizes. On a CPU the model
        takes at most CPU_TOKENS_PER_PASS patch tokens at a time: ViT-B/16 at 500x375
        (768 tokens) on one core took 1.09 s per image alone, 1.17 in fours and 1.30 in
        sixteens (larger passes leave the caches), while toyclip's 64-token images run
        fastest many at a time.

        An image whose long side exceeds :attr:`max_side` is shrunk to it first (the
        model-input budget, ``wsss_ray.budget``), so the model's cost is bounded
        whatever the image; its CAMs still come back at the image's own size.

        Each image goes to the device once, as uint8; resizing to the model's input,
        normalising, upsampling and summing the maps all run there.
        """
        from wsss_ray.cam.gradcam import minmax

        dev = self.device
        acc = [torch.zeros((len(i), *img.shape[:2]), device=dev) for img, i in zip(images, class_ids)]
        inputs = [shrink(img, fit_side(*img.shape[:2], self.max_side)) for img in images]
        pixels = [torch.from_numpy(np.require(img, requirements=["C", "W"])).to(dev) for img in inputs]
        for scale in scales:
            groups: dict[tuple[int, int], list[int]] = {}
            for b, img in enumerate(inputs):
                groups.setdefault(self.input_size(*img.shape[:2], scale), []).append(b)
            chunks = [(size, group[i:i + step]) for size, group in groups.items()
                      for step in [self._images_per_pass(size, len(group))] for i in range(0, len(group), step)]
            for size, group in chunks:
                x = torch.stack([self.model_input(pixels[b], size) for b in group])
                maps = grid_cams(x, [class_ids[b] for b in group])
                for b, m in zip(group, maps):
                    if not len(m):  # an image without labels: nothing to upsample
                        continue
                    up = F.interpolate(m[None].float(), size=images[b].shape[:2], mode="bilinear",
                                       align_corners=False)[0]
                    acc[b] += up.clamp_(0, 1)
        if not normalise:
            return [a / len(scales) for a in acc]
        return [minmax(a) if len(a) else a for a in acc]


class TextCamMethod(CamMethod):
    """A CAM method that compares image features with encoded class prompts.

    Its settings have ``templates``, ``synonym_fusion`` and ``background_words``; the
    class and background texts are encoded once, at construction (``self.text``).
    """

    def __init__(self, config, clip: LoadedClip, labelset: Labelset):
        super().__init__(config, clip, labelset)
        self.text = text_features(clip.model, clip.tokenizer, labelset, config.templates,
                                  config.synonym_fusion, config.background_words)

    @classmethod
    def prompts(cls, config, labelset: Labelset) -> list[str]:
        templates = config.templates or labelset.templates
        words = [text for group in class_texts(labelset, config.synonym_fusion) for text in group]
        words += list(labelset.background) if config.background_words else []
        return [t.format(w) for w in words for t in templates]
