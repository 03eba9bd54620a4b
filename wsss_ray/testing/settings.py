"""The labelling settings the tests and benchmarks run on the toy world with toyclip."""

from __future__ import annotations

from typing import Any

from wsss_ray.config import LabelJobConfig, resolve_label_job


def toy_job(**settings: Any) -> LabelJobConfig:
    """The labelling job's settings as a user's run with toyclip gets them (the model's own
    ``label_config.yaml``), with the default method, excel, and `settings` on top (nested as in a
    ``--config`` file: ``post={"crf": {"iters": 0}}``).

    ``LabelJobConfig()`` alone holds ExCEL's ViT-B/16 defaults: a 320 px input, 25 times the
    work of toyclip's own 64 px for the same 64 px toy image.
    """
    return resolve_label_job({"method": "excel", **settings})
