"""Ray Tune sweeps over the labelling settings, the tagger's or the training settings, every trial in MLflow.

Three kinds (``SweepConfig.kind``):

- ``labels``: each trial labels a small dev source that has masks with one set of
  labelling settings and reports the pseudo-masks' mIoU. CAMs depend only on the
  CAM-level settings (the method's section, ``clip_es.*``, and, when the labels are
  proposed, ``labels`` and ``tagger.*``), so they are computed once per distinct
  combination and kept in a cache under the sweep's output (:class:`CamCache`); a
  trial that changes only ``post.*`` settings reads them back and runs only the
  background score, CRF and argmax.
- ``tags``: each trial runs the tagger (``tagger.*``) on a dev source that has
  image-level labels, no masks needed, and reports the proposed labels' micro F1
  (``tag_f1``; also ``tag_map`` and ``tag_exact``). The class scores are computed
  once per setting that changes them; the threshold and the top-k cap only read them.
- ``train``: each trial builds and fits a ``TorchTrainer`` (Ray Train V2 inside a
  Tune function: ``Tuner(TorchTrainer)`` raises on Ray 2.60) and reports val mIoU
  every epoch through ``TuneReportCallback``; ASHA stops weak trials early.

Search spaces are YAML (``wsss_ray/spaces/<kind>.yaml``): dotted setting names
with one distribution each. The searcher is Optuna's TPE (or random search). The
sweep writes ``best_config.yaml``, which ``jobs/pseudolabel.py --config`` (or
``jobs/train.py --config``) takes as it is. A killed sweep restarted with the same
output resumes (``Tuner.restore``) without rerunning finished trials.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import posixpath
import sys
import time
from importlib import resources
from typing import Any, Callable

import numpy as np
import ray
import yaml
from ray import tune

from wsss_ray.config import (MODEL_SETTINGS_FILE, LabelJobConfig, SweepConfig, TrainConfig, build, label_job_config,
                             label_keys, merge, method_key, model_folder, model_settings, params, read_mapping,
                             resolve, settings_dict)
from wsss_ray.store import absolute, atomic_write, is_file, read_bytes, run_folder
from wsss_ray.store import Item, load_image, load_mask, read_source

OBJECTIVE = {"labels": "miou", "tags": "tag_f1", "train": "val_miou"}
REPORTED = ("cam_cache_hit", "trial_seconds", "tag_map", "tag_exact", "epoch", "train_loss", "training_iteration")
DISTRIBUTIONS: dict[str, Callable] = {"choice": tune.choice, "uniform": tune.uniform,
                                      "loguniform": tune.loguniform, "randint": tune.randint}
JSON_PREFIX = "json:"  # choice values that are lists travel as JSON strings (Optuna takes only scalars)
TRAIN_KEYS = ("loss", "cgl_threshold", "lr", "epochs", "batch_size", "crop", "aug_scales", "arch", "seed",
              "unfreeze", "feature_blocks", "clip_scale")
STATE_FILE = "sweep.json"


# ------------------------------------------------------------------ search spaces


def default_space(kind: str, method: str | None = None) -> list[str]:
    """The shipped space files of a sweep kind: for labels, the shared post.yaml plus the method's own."""
    folder = resources.files("wsss_ray").joinpath("spaces")
    if kind in ("train", "tags"):
        return [str(folder.joinpath(f"{kind}.yaml"))]
    own = folder.joinpath(f"{method_key(method or LabelJobConfig.method)}.yaml")
    return [str(own)] * own.is_file() + [str(folder.joinpath("post.yaml"))]


def _encode(value: Any) -> Any:
    return JSON_PREFIX + json.dumps(value) if isinstance(value, (list, dict)) else value


def decode(trial: dict) -> dict:
    """A trial's sampled values with JSON-encoded choices turned back into lists."""
    return {k: json.loads(v[len(JSON_PREFIX):]) if isinstance(v, str) and v.startswith(JSON_PREFIX) else v
            for k, v in trial.items()}


def load_space(paths: str | list[str], apply: Callable[[dict], Any], known: list[str]) -> dict[str, dict]:
    """The search space in `paths` (one YAML file, or several merged), checked before anything starts.

    Every key must be one of `known` (dotted setting names) and every value one
    distribution; each choice (and each range's ends) must make valid settings when
    applied with `apply`. Errors name the key and say what to do.
    """
    paths = [paths] if isinstance(paths, str) else paths
    space = {key: (path, spec) for path in paths for key, spec in read_mapping(path).items()}
    for key, (path, spec) in space.items():
        if key not in known:
            raise ValueError(f"search space {path}: {key!r} is not a setting; choose from {sorted(known)}")
        if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in DISTRIBUTIONS):
            raise ValueError(f"search space {path}: {key!r} needs one distribution, one of {list(DISTRIBUTIONS)} "
                             f"with its arguments, e.g. {{uniform: [0.1, 1.0]}}")
        (name, args), = spec.items()
        if not isinstance(args, list) or not args or (name != "choice" and len(args) != 2):
            raise ValueError(f"search space {path}: {key!r}: {name} takes "
                             f"{'a list of values' if name == 'choice' else '[low, high]'}, got {args!r}")
        for value in args:
            try:
                apply({key: value})
            except (ValueError, TypeError) as e:
                raise ValueError(f"search space {path}: {key!r} = {value!r} is not a valid setting: {e}") from None
    return {key: spec for key, (_, spec) in space.items()}


def domains(space: dict[str, dict]) -> dict[str, Any]:
    """Tune sample domains for a checked space."""
    out = {}
    for key, spec in space.items():
        (name, args), = spec.items()
        out[key] = tune.choice([_encode(v) for v in args]) if name == "choice" else DISTRIBUTIONS[name](*args)
    return out


# ------------------------------------------------------------------ labels: settings, CAM cache, one trial


def apply_labels(base: LabelJobConfig, trial: dict) -> LabelJobConfig:
    """`base` with a trial's dotted settings laid over it."""
    return label_job_config(merge(settings_dict(base), decode(trial)))


def label_space_keys(base: LabelJobConfig) -> list[str]:
    cam, post = label_keys(base)
    return cam + post


def tag_space_keys(base: LabelJobConfig) -> list[str]:
    return [k for k in params(base) if k.startswith("tagger.")]


class CamCache:
    """CAMs of the dev images, one file per distinct CAM-level setting, under a sweep's output.

    The key hashes everything the CAMs depend on (model, labelset, method, the
    method's settings, the labels mode and the tagger's settings, and the precision
    the model runs in); the file maps image id -> float16 KxHxW CAMs and ``ID.labels``
    -> the K labels they are of. Files are written atomically, so trials that race on
    one key both end with a whole file.
    """

    def __init__(self, root: str):
        self.root = root.rstrip("/")

    @staticmethod
    def key(config: LabelJobConfig) -> str:
        cam_keys, _ = label_keys(config)
        if config.labels == "given":  # the tagger decides nothing then
            cam_keys = [k for k in cam_keys if not k.startswith("tagger.")]
        p = params(config)
        what = {"model": config.model, "pretrained": config.pretrained, "labelset": config.labelset,
                "method": config.method, "precision": config.precision, **{k: p[k] for k in cam_keys}}
        return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def path(self, key: str) -> str:
        return f"{self.root}/{key}.npz"

    def load(self, key: str, ids: list[str]) -> dict[str, tuple[list[str], np.ndarray]] | None:
        if not is_file(self.path(key)):
            return None
        with np.load(io.BytesIO(read_bytes(self.path(key)))) as data:
            cams = {i: (data[f"{i}.labels"].tolist(), data[i]) for i in ids if i in data.files}
        return cams if len(cams) == len(ids) else None

    def save(self, key: str, cams: dict[str, tuple[list[str], np.ndarray]]) -> None:
        buf = io.BytesIO()
        arrays = {i: m for i, (_, m) in cams.items()}
        arrays.update({f"{i}.labels": np.array(labels, dtype=str) for i, (labels, _) in cams.items()})
        np.savez(buf, **arrays)
        atomic_write(self.path(key), buf.getvalue())


def item_labels(config: LabelJobConfig, labeler, items: list[Item], images: list[np.ndarray]) -> list[list[str]]:
    """The labels each item is labelled with under `config`'s labels mode: its own, or the tagger's."""
    todo = [i for i, it in enumerate(items) if config.labels == "auto" or it.labels is None]
    if config.labels == "given" and todo:
        raise ValueError(f"dev item {items[todo[0]].id} has no labels; give them or sweep with labels: missing")
    labels = [list(it.labels or ()) for it in items]
    for i, tags in zip(todo, labeler.tags([images[i] for i in todo]) if todo else []):
        labels[i] = tags.labels
    return labels


def compute_cams(config: LabelJobConfig, items: list[Item], images: list[np.ndarray], batch_size: int = 32
                 ) -> dict[str, tuple[list[str], np.ndarray]]:
    """id -> (labels, float16 CAMs) of the items under `config`'s CAM-level settings (loads the model);
    the labels are the tagger's where the labels mode asks for them."""
    from wsss_ray.labeler import Labeler

    labeler = Labeler.from_config(config)
    labels = item_labels(config, labeler, items, images)
    cams: dict[str, tuple[list[str], np.ndarray]] = {}
    for i in range(0, len(items), batch_size):
        chunk = slice(i, i + batch_size)
        maps = labeler.cams(images[chunk], labels[chunk])
        cams.update({it.id: (lab, m.astype(np.float16)) for it, lab, m in zip(items[chunk], labels[chunk], maps)})
    return cams


def evaluate_labels(config: LabelJobConfig, items: list[Item], images: list[np.ndarray],
                    cache: CamCache | None = None, cams_fn=compute_cams) -> dict:
    """mIoU of `config`'s pseudo-masks on the dev items, CAMs from `cache` when it has them.

    CAMs always pass through float16 (as stored in the cache), so a trial scores the
    same with or without the cache. Returns the metrics a trial reports.
    """
    from wsss_ray.labeler import class_ids, refine, to_probs
    from wsss_ray.labelset import load_labelset
    from wsss_ray.metrics import accumulate, scores

    start = time.time()
    key = CamCache.key(config)
    cams = cache.load(key, [it.id for it in items]) if cache else None
    hit = cams is not None
    if not hit:
        cams = cams_fn(config, items, images)
        if cache:
            cache.save(key, cams)
    labelset = load_labelset(config.labelset)

    def pairs():
        for it, image in zip(items, images):
            labels, maps = cams[it.id]
            ids = class_ids(labelset, labels)
            probs = to_probs(maps.astype(np.float32), config.post)
            yield load_mask(it.mask), refine(image, probs, ids, config.post)[0]

    miou = scores(accumulate(pairs(), len(labelset) + 1)).miou
    return {"miou": float(miou), "cam_cache_hit": int(hit), "trial_seconds": time.time() - start}


_IMAGES: dict[tuple[str, ...], list[np.ndarray]] = {}  # decoded dev images, kept by a reused trial actor


def label_trial(trial: dict, base: LabelJobConfig, items: list[Item], cache_root: str | None) -> None:
    """One labels trial (Tune function): apply the sampled settings, score them, report."""
    config = apply_labels(base, trial)
    tune.report(evaluate_labels(config, items, dev_images(items), CamCache(cache_root) if cache_root else None))


def dev_images(items: list[Item]) -> list[np.ndarray]:
    """The dev items' decoded images, decoded once per trial actor (Tune reuses it across trials)."""
    ids = tuple(it.id for it in items)
    if ids not in _IMAGES:
        _IMAGES.clear()
        _IMAGES[ids] = [load_image(it.image) for it in items]
    return _IMAGES[ids]


def dev_items(sweep: SweepConfig, root: str) -> list[Item]:
    """The dev source's first `limit` items with what the sweep scores against (default with the toy
    world: generated val images): masks for a labels sweep, image-level labels for a tags sweep."""
    need = "image-level labels" if sweep.kind == "tags" else "masks"
    source = sweep.input
    if source is None:
        if sweep.labelset != "toyworld":
            raise ValueError(f"a {sweep.kind} sweep needs --input, a dev source whose items have {need}")
        from wsss_ray.toyworld import default_collection

        source = default_collection("val", sweep.limit, f"{root}/dev")
    has = (lambda it: it.labels is not None) if sweep.kind == "tags" else (lambda it: it.mask)
    items = [it for it in read_source(source) if has(it)][:sweep.limit]
    if not items:
        raise ValueError(f"--input {source} has no items with {need}; a {sweep.kind} sweep scores against them")
    return items


_SCORES: dict[str, np.ndarray] = {}  # class scores per score-level tagger setting, kept by a reused trial actor
SELECTION_KEYS = ("tagger.threshold", "tagger.top_k", "tagger.min_label_quality")  # act after the class scores


def evaluate_tags(config: LabelJobConfig, items: list[Item], images: list[np.ndarray]) -> dict:
    """Micro F1, mAP and the exactly-right share of the tagger's labels on the dev items.

    The class scores do not depend on the threshold or the top-k cap: a trial that changes
    only those reuses the scores an earlier trial in the same actor computed.
    """
    from wsss_ray.labeler import Labeler
    from wsss_ray.labelset import load_labelset
    from wsss_ray.metrics import mean_average_precision, tag_counts, tag_scores
    from wsss_ray.tagger import select

    start = time.time()
    what = {k: v for k, v in params(config).items() if k not in SELECTION_KEYS
            and (k.startswith("tagger.") or k in ("model", "pretrained", "labelset", "precision"))}
    key = json.dumps([what, [it.id for it in items]], sort_keys=True, default=str)
    if key not in _SCORES:
        _SCORES.clear()
        tagger = Labeler.from_config(config).tagger
        _SCORES[key] = np.concatenate([tagger.scores(images[i:i + 32]) for i in range(0, len(images), 32)])
    scores = _SCORES[key]
    names = [c.name for c in load_labelset(config.labelset).classes]
    truth = np.array([[n in it.labels for n in names] for it in items])
    proposed = [select(s, names, config.tagger.threshold, config.tagger.top_k).labels for s in scores]
    figures = tag_scores(tag_counts([list(it.labels) for it in items], proposed))
    return {"tag_f1": figures["tag_f1"], "tag_exact": figures["tag_exact"],
            "tag_map": mean_average_precision(truth, scores), "trial_seconds": time.time() - start}


def tag_trial(trial: dict, base: LabelJobConfig, items: list[Item]) -> None:
    """One tags trial (Tune function): apply the sampled tagger settings, score the labels, report."""
    tune.report(evaluate_tags(apply_labels(base, trial), items, dev_images(items)))


def label_base(sweep: SweepConfig) -> LabelJobConfig:
    """Where a labels sweep starts: the method's reference defaults, then `sweep.config`.

    Not the model's own label_config.yaml settings (a sweep is how such a file is found), but
    its method when neither ``--method`` nor the ``--config`` file names one: a sweep tunes the
    method the model labels with (toyclip's clip-es), else the job's default.
    """
    start = read_mapping(sweep.config) if sweep.config else {}
    method = sweep.method or start.get("method") or model_settings(sweep.model).get("method") or LabelJobConfig.method
    given = {"model": sweep.model, "pretrained": sweep.pretrained, "labelset": sweep.labelset, "method": method}
    return label_job_config(merge(start, given))


# ------------------------------------------------------------------ train: one trial


def apply_train(base: TrainConfig, trial: dict) -> TrainConfig:
    return build(TrainConfig, decode(trial), base, what="training")


def train_trial(trial: dict, base: TrainConfig, pairs: list[tuple[str, str]], root: str,
                cpu_budget: float | None = None) -> None:
    """One train trial (Tune function): fit a TorchTrainer whose epochs report to this trial.

    `cpu_budget` is this trial's share of the cluster for its workers and data tasks.
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    from wsss_ray.train.trainer import fit

    config = dataclasses.replace(apply_train(base, trial),
                                 output=f"{root}/trials/{tune.get_context().get_trial_id()}")
    fit(config, pairs, callbacks=[TuneReportCallback()], cpu_budget=cpu_budget)


# ------------------------------------------------------------------ driver


class _TrialRuns(tune.Callback):
    """Logs each finished trial as an MLflow child run of the sweep's run (driver side)."""

    def __init__(self, parent_run_id: str, to_params: Callable[[dict], dict], objective: str):
        self.parent, self.to_params, self.objective = parent_run_id, to_params, objective

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._log(trial, failed=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._log(trial, failed=True)

    def _log(self, trial, failed: bool) -> None:
        from wsss_ray import tracking

        result = trial.last_result or {}
        metrics = {k: v for k, v in result.items() if k == self.objective or k in REPORTED}
        tracking.log_child_run(self.parent, f"trial {trial.trial_id}", self.to_params(trial.config), metrics, failed)


def _trial_name(trial) -> str:
    return f"trial_{trial.trial_id}"


def _searcher(sweep: SweepConfig, metric: str, start: dict | None):
    if sweep.searcher == "random":
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(random_state=sweep.seed, max_concurrent=sweep.max_concurrent)
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(metric=metric, mode="max", seed=sweep.seed,
                            points_to_evaluate=[start] if start else None)
    return ConcurrencyLimiter(searcher, max_concurrent=sweep.max_concurrent)


def _start_point(space: dict[str, dict], current: dict) -> dict | None:
    """The base settings as a first trial, when every one of them is a value the space offers."""
    point = {}
    for key, spec in space.items():
        (name, args), = spec.items()
        value = current.get(key)
        if name == "choice":
            matches = [v for v in args if v == value or (isinstance(v, list) and value == ",".join(map(str, v)))]
            if not matches:
                return None
            point[key] = _encode(matches[0])
        elif value is None or not args[0] <= value <= args[1]:
            return None
        else:
            point[key] = value
    return point


def _read_state(output: str) -> dict:
    path = f"{output.rstrip('/')}/{STATE_FILE}"
    return json.loads(read_bytes(path)) if is_file(path) else {}


# What a train trial itself holds: its TorchTrainer controller. The trial's workers and data tasks
# share the rest of its CPU budget (see _trial_resources); measured: with no CPU at all here, a
# sweep's second trial never got its data tasks scheduled.
TRIAL_CPU = 0.01
WORKER_CPU = 0.05


def _trial_resources(sweep: SweepConfig) -> tuple[dict, int, float | None]:
    """(resources per trial, max concurrent trials, CPUs each train trial's workers and tasks may use)."""
    if sweep.kind in ("labels", "tags"):
        return {"cpu": 1}, sweep.max_concurrent, None
    cpus = ray.cluster_resources().get("CPU", 0)
    if not cpus:  # an autoscaling cluster from zero: let it grow to the trials' demand
        return {"cpu": TRIAL_CPU}, sweep.max_concurrent, None
    fits = max(1, int(cpus // (sweep.num_workers + 1)))
    if fits < sweep.max_concurrent:
        print(f"[tune] {cpus:g} CPUs run {fits} training trial(s) at a time ({sweep.num_workers} worker(s) + data "
              f"tasks each), not {sweep.max_concurrent}", file=sys.stderr, flush=True)
    concurrent = min(fits, sweep.max_concurrent)
    # Each trial's data tasks get one whole CPU (Ray Data's file listing asks for one) and its workers
    # a nominal WORKER_CPU each. A trial that ASHA stops is killed inside TorchTrainer.fit(), and its
    # worker group's placement group outlives it until Ray Train's cleaner removes it (measured: with
    # whole-CPU workers the next trial's data tasks then waited forever). Logical CPUs do not limit
    # what a worker computes; `fits` above already caps the trials to the real CPUs.
    return {"cpu": TRIAL_CPU}, concurrent, 1.0 + WORKER_CPU * sweep.num_workers


def run(sweep: SweepConfig, mlflow_uri: str | None = None) -> dict:
    """Run (or resume) the sweep; returns its summary and writes ``best_config.yaml`` under ``sweep.output``."""
    from wsss_ray import tracking

    root = run_folder(sweep.output)
    resources_per_trial, concurrent, budget = _trial_resources(sweep)
    out = posixpath.join(*root)
    metric = OBJECTIVE[sweep.kind]
    if sweep.kind == "labels":
        base = label_base(sweep)
        known = label_space_keys(base)
        space = load_space(sweep.space or default_space("labels", base.method), lambda t: apply_labels(base, t),
                           known)
        items = dev_items(sweep, out)
        trainable = tune.with_parameters(label_trial, base=base, items=items,
                                         cache_root=f"{out}/cam-cache" if sweep.cam_cache else None)
        to_params = lambda t: params(apply_labels(base, t))  # noqa: E731
        current = params(base)
        scheduler = None
    elif sweep.kind == "tags":
        base = label_base(sweep)
        space = load_space(sweep.space or default_space("tags"), lambda t: apply_labels(base, t), tag_space_keys(base))
        trainable = tune.with_parameters(tag_trial, base=base, items=dev_items(sweep, out))
        to_params = lambda t: params(apply_labels(base, t))  # noqa: E731
        current = params(base)
        scheduler = None
    else:
        from ray.tune.schedulers import ASHAScheduler

        from wsss_ray.train.trainer import val_pairs

        given = {"input": sweep.input and absolute(sweep.input), "val": sweep.val and absolute(sweep.val),
                 "labelset": sweep.labelset,
                 "num_workers": sweep.num_workers}  # trials run in other working directories
        base = resolve(TrainConfig, {k: v for k, v in given.items() if v is not None}, sweep.config)
        space = load_space(sweep.space or default_space("train"), lambda t: apply_train(base, t), list(TRAIN_KEYS))
        trainable = tune.with_parameters(train_trial, base=base, pairs=val_pairs(base), root=out, cpu_budget=budget)
        to_params = lambda t: tracking.flatten(apply_train(base, t))  # noqa: E731
        current = tracking.flatten(base)
        max_epochs = max([base.epochs] + [e for e in space.get("epochs", {}).get("choice", [])])
        # A trial is first judged after a third of the longest run: the first epochs' val mIoU is noise.
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_epochs,
                                  grace_period=max(1, max_epochs // 3), reduction_factor=2)
    sweep = dataclasses.replace(sweep, max_concurrent=concurrent)
    trainable = tune.with_resources(trainable, resources_per_trial)
    state = _read_state(out)
    start = time.time()
    with tracking.start_run("tune", tracking.flatten(sweep), mlflow_uri, run_name=f"sweep {root[1]}",
                            run_id=state.get("mlflow_run_id"), output=out, tag="tune") as mlrun:
        if not tracking.is_offline(mlrun):  # a resumed sweep continues this MLflow run
            atomic_write(f"{out}/{STATE_FILE}", json.dumps({"mlflow_run_id": mlrun.info.run_id}).encode())
        run_config = tune.RunConfig(name=root[1], storage_path=root[0], verbose=0,
                                    callbacks=[_TrialRuns(mlrun.info.run_id, to_params, metric)])
        if tune.Tuner.can_restore(out):
            tuner = tune.Tuner.restore(out, trainable, resume_errored=True)
        else:
            tuner = tune.Tuner(trainable, param_space=domains(space), run_config=run_config,
                               tune_config=tune.TuneConfig(
                                   metric=metric, mode="max", num_samples=sweep.num_samples,
                                   search_alg=_searcher(sweep, metric, _start_point(space, current)),
                                   scheduler=scheduler, time_budget_s=sweep.time_budget_s,
                                   reuse_actors=sweep.kind != "train",
                                   trial_name_creator=_trial_name, trial_dirname_creator=_trial_name))
        results = tuner.fit()
        summary = _summarise(results, metric, sweep, base, out, time.time() - start)
        tracking.log_summary({k: v for k, v in summary.items() if k != "best_config"})
        tracking.log_text(yaml.safe_dump(summary["best_config"], sort_keys=False), "best_config.yaml")
        summary["mlflow_run_id"] = mlrun.info.run_id
    return summary


def save_model_settings(model: str, sections: dict) -> None:
    """Write `sections` into a ``local-dir:`` model's label_config.yaml, replacing those sections and
    keeping the others (a tags sweep leaves the method's settings as they were)."""
    path = model_folder(model) / MODEL_SETTINGS_FILE
    kept = {k: v for k, v in (read_mapping(path) if path.is_file() else {}).items() if k not in sections}
    atomic_write(str(path), yaml.safe_dump({**kept, **sections}, sort_keys=False).encode())


def _best_value(result, metric: str) -> float:
    """A trial's best reported value of `metric` (a training trial reports once per epoch)."""
    history = result.metrics_dataframe
    return history[metric].max() if history is not None and metric in history else result.metrics[metric]


def _summarise(results, metric: str, sweep: SweepConfig, base, out: str, seconds: float) -> dict:
    """Best trial -> best_config.yaml (and the model's label_config.yaml when asked); the sweep's figures."""
    frame = results.get_dataframe()
    done = frame[frame[metric].notna()] if metric in frame else frame.iloc[0:0]
    if done.empty:
        raise RuntimeError(f"no trial of the sweep in {out} reported {metric}; see the trial errors above")
    best = results.get_best_result(metric=metric, mode="max", scope="all")
    trial = {k: v for k, v in best.config.items()}
    if sweep.kind in ("labels", "tags"):
        best_config = apply_labels(base, trial)
        d = settings_dict(best_config)
        own = ("tagger",) if sweep.kind == "tags" else ("method", method_key(best_config.method), "post", "labels",
                                                         "tagger")
        best_dict = {k: d[k] for k in ("model", "pretrained", "labelset", *own)}
        if sweep.save_to_model:
            save_model_settings(sweep.model, {k: best_dict[k] for k in own if k != "labels"})
    else:
        d = dataclasses.asdict(apply_train(base, trial))
        best_dict = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()
                     if k not in ("input", "val", "output")}
    atomic_write(f"{out}/best_config.yaml", yaml.safe_dump(best_dict, sort_keys=False).encode())
    hits = int(done["cam_cache_hit"].sum()) if "cam_cache_hit" in done else None
    trials = len(done)
    return {"kind": sweep.kind, "trials": trials, "best_trial": posixpath.basename(best.path.rstrip("/")),
            f"best_{metric}": round(float(_best_value(best, metric)), 4), "seconds": round(seconds, 1),
            "trials_per_hour": round(3600 * trials / seconds, 1) if seconds else None,
            "cam_cache_hits": hits, "best_config_file": f"{out}/best_config.yaml", "best_config": best_dict}


__all__ = ["CamCache", "apply_labels", "apply_train", "evaluate_labels", "load_space", "run"]
