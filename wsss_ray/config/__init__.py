"""Every setting of every job, as frozen dataclasses, and how they are resolved.

Importing this package costs nothing: it needs only the standard library and PyYAML,
never torch, open_clip, Ray, MLflow or pyarrow (``tests/test_layering.py`` checks it
in a fresh process), so a driver, a CLI's ``--help`` or a sweep can build and check
settings before anything heavy starts. By concern:

    layers.py    checks, the overlay of mappings on dataclasses, dotted names (generic)
    methods.py   the CAM methods' settings and the one ``--method`` registry, METHODS
    label.py     the labelling job: CRF, post-processing, the job, a model's label_config.yaml
    train.py     training, SemPLeS prompt learning, prediction
    sweep.py     Ray Tune sweeps
    flags.py     a job's flags -> its settings

One name for one thing. A setting has the same dotted name in a ``--config`` file,
on the command line (``--batch-size`` for ``batch_size``), in MLflow params and in a
sweep's search space:

    input: voc:/data/VOCdevkit/VOC2012:train      # the labelling job (LabelJobConfig)
    method: clip-es
    clip_es: {caa: false, scales: [1.0, 2.0]}     # the method's own settings (ClipESConfig)
    post: {bg_power: 0.5, crf: {iters: 10}}       # after the CAMs, shared by all methods (PostConfig)
    labels: missing                               # proposed where an item has none (TaggerConfig)
    tagger: {threshold: 0.3}

-> params ``input``, ``method``, ``clip_es.caa``, ``clip_es.scales``, ``post.bg_power``,
``post.crf.iters``, ``labels``, ``tagger.threshold``. A method's section is its registry name with ``_`` for ``-``.

Settings are layered, each layer overriding the one before: the defaults, the
model's own ``label_config.yaml`` (beside its weights: ``toyclip`` ships one), the
``--config`` file, then the flags given. Unknown keys and bad option values are
errors raised here, before Ray starts.
"""

from wsss_ray.config.flags import parse_settings
from wsss_ray.config.label import (CRF_BACKENDS, IMAGE_SIGNALS, JOB_KEYS, LABEL_KEYS, LABEL_MODES, LABEL_SIGNALS,
                                   LOCAL_DIR, MODEL_SETTINGS_FILE, PRECISIONS, TAGGER_KINDS, TOYCLIP, CrfConfig,
                                   LabelJobConfig, PostConfig, QualityConfig, TaggerConfig, label_job_config, label_keys,
                                   model_folder, model_settings, params, resolve_label_job, settings_dict,
                                   write_settings)
from wsss_ray.config.layers import build, flatten, merge, parse_concurrency, read_mapping, resolve, unflatten
from wsss_ray.config.methods import (CAA_SOURCES, FREESEG_SCORES, METHODS, SCORES, SOFTMAX_OVER, SYNONYM_FUSIONS,
                                     ClipESConfig, ExcelConfig, FreeSegConfig, Method, PromptedCamConfig, SemplesConfig, method_entry,
                                     method_config_class, method_key)
from wsss_ray.config.sweep import SEARCHERS, SWEEP_KINDS, SweepConfig
from wsss_ray.config.train import ARCHS, LOSSES, REFINES, LearnPromptsConfig, PredictConfig, TrainConfig, resolve_predict

__all__ = ["ARCHS", "CAA_SOURCES", "CRF_BACKENDS", "FREESEG_SCORES", "IMAGE_SIGNALS", "JOB_KEYS", "LABEL_KEYS",
           "LABEL_MODES", "LABEL_SIGNALS", "TAGGER_KINDS", "TaggerConfig", "LOCAL_DIR", "LOSSES", "METHODS", "REFINES",
           "MODEL_SETTINGS_FILE", "PRECISIONS", "SCORES", "SEARCHERS", "SOFTMAX_OVER", "SWEEP_KINDS",
           "SYNONYM_FUSIONS", "TOYCLIP", "ClipESConfig", "CrfConfig", "ExcelConfig", "FreeSegConfig", "LabelJobConfig",
           "LearnPromptsConfig", "Method", "PostConfig", "PredictConfig", "PromptedCamConfig", "QualityConfig", "SemplesConfig",
           "SweepConfig", "TrainConfig", "build", "flatten", "label_job_config", "label_keys", "merge", "method_entry",
           "method_config_class", "method_key", "model_folder", "model_settings", "params", "parse_concurrency",
           "parse_settings", "read_mapping", "resolve", "resolve_label_job", "resolve_predict", "settings_dict",
           "unflatten", "write_settings"]
