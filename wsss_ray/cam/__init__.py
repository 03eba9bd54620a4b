"""CAM methods: pure torch, no Ray, no MLflow.

    from wsss_ray.config import ClipESConfig, method_entry
    method = method_entry("clip-es").load()(ClipESConfig(caa=False), load_clip("toyclip"), load_labelset("toyworld"))
    cams = method.cams(images, class_ids)        # per image: KxHxW float32 in [0, 1]

``--method`` names live in one registry, ``wsss_ray.config.METHODS``, which names each
method's settings class and its class here by import path. A new method is one module
(a :class:`CamMethod` subclass, see ``base.py``) plus one line there.
"""

from wsss_ray.cam.base import CamMethod
from wsss_ray.cam.clip_es import ClipES
from wsss_ray.cam.excel import Excel
from wsss_ray.cam.freeseg import FreeSeg
from wsss_ray.cam.semples import SemPLeS

__all__ = ["CamMethod", "ClipES", "Excel", "FreeSeg", "SemPLeS"]
