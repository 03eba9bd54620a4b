"""The Ray Data pseudo-labelling graph: items -> decode -> CAM -> dense CRF -> Parquet.

Each stage declares what it needs. ``decode`` and ``crf`` are CPU tasks. ``cam``
is a pool of actors that build the labeller once each (``Labeler.from_config``:
the model, the method, its prompts) and autoscales between the ``concurrency``
bounds; it takes ``num_gpus`` GPUs per actor. A GPU actor runs every step after
decoding on its GPU (``crf_in_actor``, ``Labeler.masks_on_device``): the CAMs, the
background score, the torch CRF, the quality signals, the mask and the confidence, so the
CRF tasks only encode PNGs; at GPU CAM rates the CRF on CPU cores would need dozens of
them (docs/RESULTS.md). A bad item becomes an ``error`` row and never stops the job.

The data path, top to bottom, and where each step lives:

    input     wsss_ray.store.inputs.read_items  sources -> item rows (Ray Data readers)
    resume    wsss_ray.store.inputs.pending     drop ids already written, mark repeated ones
    decode    wsss_ray.stages.decode_stage      CPU tasks; within the size budget (wsss_ray.budget)
    cam       CamStage                          actor pool: labels proposed where needed (wsss_ray.tagger),
                                                CAMs -> class probabilities (on a GPU: -> mask, confidence)
    crf       crf_stage                         CPU tasks: dense CRF -> mask, confidence; PNGs -> rows
    rows      wsss_ray.stages.output_table      OUTPUT_SCHEMA (wsss_ray.store.output)
    sink      wsss_ray.store.writer             claim, atomic Parquet files, progress, score
    overview  wsss_ray.store.write_overview     the first masks over their images, beside the output

:func:`build_dataset` is that graph; :func:`run` hands it to the shared driver
(``wsss_ray.store.writer.write_pending``), which prediction uses too.

The algorithm (``wsss_ray.labeler``, ``wsss_ray.cam``) knows nothing of Ray, and
the driver never imports it (nor torch): the stages import it where they run.
"""

from __future__ import annotations

import dataclasses
import sys
import uuid

import numpy as np
import pyarrow as pa
import ray

from wsss_ray.budget import decode_side
from wsss_ray.cli import step
from wsss_ray.config import LabelJobConfig, Method, method_entry, params
from wsss_ray.errors import JobError
from wsss_ray.labelset import load_labelset
from wsss_ray.metrics import tag_counts
from wsss_ray.progress import count_attempt, count_rows, count_suspect
from wsss_ray.ray_compat import actor_pool_map
from wsss_ray.resources import actor_device, fit_cpus, gpus_per_holder
from wsss_ray.stages import (decode_stage, full_pixels, lists, mark_error, objects, output_table, png_rows,
                             together_or_alone, writable_batch)
from wsss_ray.store import (batch_confusion, load_image, overview_path, unlabelled_folder, write_overview,
                            write_pending)


BLANK = np.zeros((1, 1, 1), np.float16)  # the probabilities of a row that has none (an error row)
BLANK_ROW = (BLANK, None, "cams")
PROBS_KINDS = ("cams", "crf", "mask")     # what the CAM actor hands the CRF tasks in a row's ``probs``


def crf_in_actor(config: LabelJobConfig, device: str) -> bool:
    """Whether the steps after the CAMs (the dense CRF among them) run in the CAM actor: when the
    actor has a GPU and the CRF runs there as the torch backend (``auto``'s choice on a GPU) or not
    at all, so a GPU's output does not wait on CPU cores; else in CPU tasks."""
    from wsss_ray.crf import on_device

    crf = on_device(config.post.crf, device)
    return not device.startswith("cpu") and (crf.backend == "torch" or crf.iters == 0)


NO_LABELS = ("no image-level labels given for this item; add them to the input, or run with --labels missing "
             "to have them proposed")


class CamStage:
    """Labels where needed, CAMs -> per-pixel probabilities (actor: the labeller is built once);
    on a GPU, also the CRF.

    The job's ``labels`` mode decides which rows the tagger labels (on the same model and
    the same decoded image): ``missing``, rows without labels; ``auto``, every row (the
    given labels move to ``given_labels``, for scoring); ``given``, none (a row without
    labels is an error row). With ``tagger.min_label_quality``, the actor also runs the
    CRF of a row with proposed labels, to drop those that do not hold up in the mask
    (``labeler.verify_labels``), and hands on the CRF's marginals. An image whose tagging
    or labelling raises (out of memory, a numerical error, anything the method or the
    CRF raises) becomes an error row, and the rest of its batch is labelled.
    """

    def __init__(self, config: LabelJobConfig, entry: Method | None = None, counter=None):
        from wsss_ray.labeler import Labeler

        self.device = actor_device(config.num_gpus)
        self.labeler = Labeler.from_config(config, self.device, entry)
        self.refine = crf_in_actor(config, self.device)
        self.counter = counter
        self.mode = config.labels

    def __call__(self, batch: dict) -> dict:
        attempt = count_attempt(self.counter, "cam", batch["id"])
        batch = writable_batch(batch)
        n = len(batch["id"])
        self.propose(batch)
        todo = []
        for i in range(n):
            if batch["status"][i] != "ok":
                continue
            try:
                self.labeler.class_ids(list(batch["labels"][i]))
                todo.append(i)
            except KeyError as e:
                mark_error(batch, i, str(e.args[0]))
        done = dict(zip(todo, self.probs(batch, todo, alone=attempt > 1))) if todo else {}
        rows = [done.get(i, BLANK_ROW) for i in range(n)]
        batch["probs"] = objects([r[0] for r in rows])
        batch["scores"] = objects([r[1] for r in rows])
        batch["probs_kind"] = np.array([r[2] for r in rows], dtype=object)  # what the actor has done (PROBS_KINDS)
        return batch

    def propose(self, batch: dict) -> None:
        """The labels of the rows the mode leaves to the tagger, in place; ``labels_source``,
        ``label_scores`` and ``given_labels`` (the labels given, kept for scoring) per row."""
        n = len(batch["id"])
        given = list(batch["labels"])
        batch["given_labels"] = objects(given)
        batch["labels_source"] = np.array([None if g is None else "given" for g in given], dtype=object)
        batch["label_scores"] = objects([None] * n)
        rows = [i for i in range(n) if batch["status"][i] == "ok" and (self.mode == "auto" or given[i] is None)]
        if self.mode == "given":
            for i in rows:
                mark_error(batch, i, NO_LABELS)
            rows = []
        tags = together_or_alone(batch, rows, lambda r: self.labeler.tags([batch["pixels"][i] for i in r]), "tagging")
        for i, t in zip(rows, tags):
            if t is None:
                continue
            batch["labels"][i], batch["labels_source"][i], batch["label_scores"][i] = t.labels, "predicted", t.scores
            if not t.labels:  # an ok row whose note says why its mask is all background
                batch["error"][i] = (f"the tagger proposed no label (none scored {self.labeler.tagger_config.threshold}"
                                     f" or more): the mask is all background")

    def probs(self, batch: dict, rows: list[int], alone: bool = False) -> list[tuple[np.ndarray, tuple | None, str]]:
        """(array, quality scores or None, its kind) of the images `rows`, all together; if that
        raises, one image at a time, and an image that raises alone is an error row. The kinds
        (PROBS_KINDS): ``cams``, float16 class probabilities (the CRF tasks run the CRF);
        ``crf``, the CRF's float16 marginals; ``mask``, uint8 [mask, confidence] at the image's
        full size, made on the actor's device (``Labeler.masks_on_device``: a GPU actor's rows
        within the CRF's size budget).

        `alone`: a batch retried after its actor died is labelled one image at a time, each
        named to the job's counter first, so an image that kills the actor every time is known.
        """
        if alone:
            out = []
            for i in rows:
                count_suspect(self.counter, "cam", batch["id"][i])
                out += self.probs(batch, [i])
            return out
        return [BLANK_ROW if p is None else p
                for p in together_or_alone(batch, rows, lambda r: self._probs(batch, r), "labelling")]

    def _probs(self, batch: dict, rows: list[int]) -> list[tuple[np.ndarray, tuple | None, str]]:
        from wsss_ray.crf import crf_within_budget, score
        from wsss_ray.labeler import to_probs, verify_labels

        pixels = [batch["pixels"][i] for i in rows]
        labels = [list(batch["labels"][i]) for i in rows]
        tensors = self.labeler.cam_tensors(pixels, labels)
        check = self.labeler.tagger_config.min_label_quality
        checked = [bool(check) and batch["labels_source"][i] == "predicted" for i in rows]
        here = [k for k, i in enumerate(rows) if self.refine and not checked[k] and self.labeler.fits_device(pixels[k])
                and pixels[k].shape[:2] == (batch["height"][i], batch["width"][i])]
        made = dict(zip(here, self.labeler.masks_on_device([pixels[k] for k in here], [tensors[k] for k in here],
                                                           [labels[k] for k in here])))
        out = []
        for k, (i, image, tensor) in enumerate(zip(rows, pixels, tensors)):
            if k in made:  # mask, confidence and scores made on the actor's device
                mask, confidence, *scores = made[k]
                out.append((np.stack([mask, confidence]), tuple(scores), "mask"))
                continue
            cam = tensor.cpu().numpy()
            p, scores, kind = to_probs(cam, self.labeler.post), None, "cams"
            if checked[k]:  # proposed labels must hold up in their mask
                v = verify_labels(image, cam, self.labeler.post, check, self.device)
                batch["labels"][i] = [batch["labels"][i][j] for j in v.kept]
                batch["label_scores"][i] = [batch["label_scores"][i][j] for j in v.kept]
                if cam.shape[0] and not v.kept:
                    batch["error"][i] = (f"no proposed label held up in its mask (label_quality below {check}): "
                                         f"the mask is all background")
                p, scores, kind = v.marginals, v.scores, "crf"
            elif self.refine:  # the CRF's marginals, computed here on the GPU, and their scores
                marginals = crf_within_budget(image, p, self.labeler.post.crf, self.device)[0]
                p, scores, kind = marginals, score(p, marginals, self.labeler.post.quality), "crf"
            out.append((p.astype(np.float16), scores, kind))
        return out


def crf_stage(batch: dict, config: LabelJobConfig, run_id: str, counter=None) -> pa.Table:
    """Dense CRF (unless the CAM actor ran it), pseudo-mask and confidence PNGs at the images'
    full size and their ``quality`` scores (CPU tasks); the rows done go to `counter`."""
    from wsss_ray.budget import shrink
    from wsss_ray.crf import full_size_mask, refine_scored

    count_attempt(counter, "crf", batch["id"])
    labelset = load_labelset(config.labelset)
    batch = writable_batch(batch)
    kinds = batch.get("probs_kind", ["cams"] * len(batch["id"]))

    def mask(i: int) -> tuple:
        if kinds[i] == "mask":  # made on the actor's device: only the PNGs are left
            return (*batch["probs"][i], *batch["scores"][i])
        probs = batch["probs"][i].astype(np.float32)
        probs /= probs.sum(0, keepdims=True)  # float16 transport loses the exact normalisation
        ids = labelset.class_ids(list(batch["labels"][i]))
        image = batch["pixels"][i]
        full = full_pixels(batch, i, config.max_pixels)
        if kinds[i] == "crf":  # the actor ran the CRF: these are its marginals
            return (*full_size_mask(probs, shrink(image, probs.shape[1:]), ids, config.post, full), *batch["scores"][i])
        return refine_scored(image, probs, ids, config.post, full)

    pngs = png_rows(batch, mask, "refinement")
    table = output_table(batch, pngs, labelset=config.labelset, model=config.model, method=config.method,
                         run_id=run_id)
    truths = batch.get("mask", [None] * table.num_rows)  # the items' ground-truth paths
    count_rows(counter, table.num_rows, *batch_confusion(list(truths), table, len(labelset) + 1),
               tags=scored_tags(batch))
    return table


def scored_tags(batch: dict) -> np.ndarray | None:
    """``metrics.tag_counts`` over the batch's ok rows whose labels the tagger proposed although the
    input gave some (``--labels auto``): what the job's tag scores sum."""
    if "given_labels" not in batch:
        return None
    rows = [(truth, batch["labels"][i]) for i, truth in enumerate(lists(batch["given_labels"]))
            if truth is not None and batch["status"][i] == "ok" and batch["labels_source"][i] == "predicted"]
    return tag_counts(*zip(*rows)) if rows else None


@ray.remote(num_cpus=0)
def method_prompts(config: LabelJobConfig, entry: Method) -> list[str]:
    """The prompts the method encodes (logged with the run), computed off the driver."""
    return entry.load().prompts(config.method_config, load_labelset(config.labelset))


def build_dataset(config: LabelJobConfig, items: ray.data.Dataset, run_id: str, cam_stage: type = CamStage,
                  counter=None) -> ray.data.Dataset:
    """The lazy graph: items -> decode (CPU tasks) -> CAM (actor pool) -> CRF (CPU tasks, counted)."""
    config = dataclasses.replace(config, num_gpus=gpus_per_holder(config.num_gpus, "pseudolabel"))
    actor_cpus, task_cpus = fit_cpus(config.concurrency[0], config.num_cpus, "pseudolabel")
    side = decode_side(config.method_config, config.post.crf)
    ds = items.map_batches(decode_stage, fn_kwargs={"max_pixels": config.max_pixels, "max_side": side},
                           batch_size=config.batch_size, num_cpus=task_cpus)
    ds = actor_pool_map(ds, cam_stage, config.concurrency, config.num_gpus, actor_cpus,
                        fn_constructor_kwargs={"config": config, "counter": counter,
                                               "entry": method_entry(config.method)},
                        batch_size=config.batch_size)
    return ds.map_batches(crf_stage, fn_kwargs={"config": config, "run_id": run_id, "counter": counter},
                          batch_size=config.batch_size, num_cpus=task_cpus, batch_format="numpy")


def run(config: LabelJobConfig, run_id: str | None = None, cam_stage: type = CamStage,
        progress_interval: float = 10.0) -> dict:
    """Label the input into Parquet under ``config.output``; returns the job's summary.

    `cam_stage` is the actor class that turns decoded images into class probabilities;
    ids already in the output are skipped. mIoU is reported when the input has masks.
    """
    if config.input is None:
        raise ValueError("no input given; pass --input SOURCE (a manifest, folder, voc:... or coco:...)")
    labelset = load_labelset(config.labelset)  # fail before starting Ray if the labelset is wrong
    if config.labels == "given" and unlabelled_folder(config.input):
        raise JobError(f"folder {config.input} has no labels.jsonl or labels.csv with the images' labels; add one, "
                       f"or run with --labels missing (or auto) to have the labels proposed")
    run_id = run_id or uuid.uuid4().hex
    summary = write_pending(config.input, config.output, run_id,
                            lambda items, counter: build_dataset(config, items, run_id, cam_stage, counter),
                            config.batch_size, config.rows_per_file, config.concurrency[1], config.limit,
                            progress_interval, num_classes=len(labelset) + 1)
    summary["overview"] = overview(config.output)
    return summary


def overview(output: str) -> str | None:
    """Write the output's overview image (:func:`wsss_ray.store.write_overview`); its path, or None
    with one line on stderr when it cannot be written: the rows are, so that is not the job's failure."""
    path = overview_path(output)
    with step("pseudolabel", f"drawing the first masks over their images into {path}"):
        try:
            return write_overview(output)
        except OSError as e:
            print(f"[pseudolabel] no overview: {path} could not be written ({e})", file=sys.stderr, flush=True)
            return None


def run_tracked(config: LabelJobConfig, mlflow_uri: str | None = None, **run_kwargs) -> dict:
    """:func:`run` inside an MLflow run: settings as params, summary as metrics, artifacts.

    The MLflow run id is also the ``run_id`` column of the rows this run writes.
    """
    from wsss_ray import tracking

    mlflow_uri = mlflow_uri or tracking.default_uri()
    with tracking.start_run("pseudolabel", params(config), mlflow_uri, output=config.output) as mlrun:
        summary = run(config, run_id=mlrun.info.run_id, **run_kwargs)
        summary["mlflow_run_id"] = mlrun.info.run_id
        with step("pseudolabel", "logging the labelset, prompts and overview to MLflow"):
            tracking.log_summary(summary)
            tracking.log_text(load_labelset(config.labelset).to_yaml(), "labelset.yaml")
            prompts = ray.get(method_prompts.remote(config, method_entry(config.method)))
            tracking.log_text("\n".join(prompts), "prompts.txt")
            if summary.get("overview"):
                tracking.log_image(load_image(summary["overview"]), "overlays.png")
        summary.update(tracking.ui_pointer(mlflow_uri, mlrun))
    return summary
