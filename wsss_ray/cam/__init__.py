"""CAM methods, keyed by ``--method``: pure torch, no Ray, no MLflow.

    from wsss_ray.cam import CAM_METHODS
    method = CAM_METHODS["clip-es"](ClipESConfig(caa=False), load_clip("toyclip"), load_labelset("toyworld"))
    cams = method.cams(images, class_ids)        # per image: KxHxW float32 in [0, 1]

A new method is one module (a settings dataclass and a :class:`CamMethod`
subclass, see ``base.py``) plus one line here.
"""

from wsss_ray.cam.base import CamMethod
from wsss_ray.cam.clip_es import ClipES
from wsss_ray.cam.freeseg import FreeSeg
from wsss_ray.cam.semples import SemPLeS

CAM_METHODS: dict[str, type[CamMethod]] = {
    "clip-es": ClipES,
    "freeseg": FreeSeg,
    "semples": SemPLeS,
}

__all__ = ["CAM_METHODS", "CamMethod", "ClipES", "FreeSeg", "SemPLeS"]
