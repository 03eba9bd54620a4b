"""What a CAM method is: a class built from its settings, a loaded CLIP and a labelset.

A method turns decoded images and their class ids into per-image KxHxW CAMs in
[0, 1] at the image's own size. Everything after that (background score, CRF,
mask, confidence) is shared by all methods (``wsss_ray.labeler``). Methods are
pure torch: no Ray, no MLflow.

To add one: write a module with a frozen settings dataclass and a subclass of
:class:`CamMethod` whose ``config_class`` is that dataclass, then add one line to
``wsss_ray.cam.CAM_METHODS``. ``--method NAME`` selects it, its settings go under
``NAME`` (``-`` written ``_``) in ``--config`` files, MLflow params and sweeps.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from wsss_ray.clip import LoadedClip
from wsss_ray.labelset import Labelset


class CamMethod:
    """Base class of the CAM methods; subclasses set ``config_class`` and implement :meth:`cams`."""

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
        raise NotImplementedError

    @classmethod
    def prompts(cls, config, labelset: Labelset) -> list[str]:
        """The text prompts the method will encode for `labelset` (logged beside each run)."""
        return []
