"""How well the tagger proposes image-level labels, and what it costs beside the CAMs.

On the toy world with toyclip: each tagger variant scores the val split, where its
threshold (and whether to cap the labels at the top 3) is chosen for the best F1;
then it is scored on the test split at that threshold: multi-label mAP, micro F1,
and the share of images whose label set is exactly right. ``global`` (no flip) is
the plain CLIP classification, the baseline. The last lines print the variant that
won on val as a ``tagger:`` section (what toyclip's label_config.yaml holds).

Cost: the tagger's time per image against the CAM stage's (the method's CAMs for
the images' labels) on the same decoded test images, in the same process, with
the model's own precision.

``--masks`` scores the masks the labeller makes from the tagger's labels against those
from the given labels (the Python API, the same post-processing as the job): on val for
each ``tagger.min_label_quality`` (0: off), on test for all of them.

``--real DIR`` runs the tagger at ViT-B/16 size (random weights: the scores mean
nothing, only that it runs and what it costs) on the sample photos under DIR, each
decoded within the job's size budget as the CAM actor sees it.

    .venv/bin/python benchmarks/tagger.py [--val 500] [--test 500]
    .venv/bin/python benchmarks/tagger.py --masks [--val 300] [--test 500]
    .venv/bin/python benchmarks/tagger.py --real ../shared/data/real-sample
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from wsss_ray.budget import decode_side
from wsss_ray.config import TaggerConfig
from wsss_ray.labeler import Labeler
from wsss_ray.metrics import mean_average_precision, tag_counts, tag_scores
from wsss_ray.store import decode_within
from wsss_ray.tagger import select
from wsss_ray.toyworld.world import split_samples

VARIANTS = {
    "global (the baseline)": dict(kind="global", flip=False),
    "global, flip": dict(kind="global", flip=True),
    "patches only": dict(flip=False, refine=False, reidentify=False, global_weight=0.0),
    "patches, refined": dict(flip=False, refine=True, reidentify=False, global_weight=0.0),
    "refined + reidentified": dict(flip=False, refine=True, reidentify=True, global_weight=0.0),
    "tagclip: + global (w 0.5)": dict(flip=False, global_weight=0.5),
    "tagclip: + global (w 0.5), flip": dict(flip=True, global_weight=0.5),
    "tagclip: + global (w 0.7), flip": dict(flip=True, global_weight=0.7),
}
THRESHOLDS = np.round(np.arange(0.005, 1.0, 0.005), 3)


def truth_matrix(samples, names: list[str]) -> np.ndarray:
    return np.array([[n in s.labels for n in names] for s in samples])


def figures(scores: np.ndarray, truth: np.ndarray, names: list[str], threshold: float, top_k: int | None) -> dict:
    proposed = [select(s, names, threshold, top_k).labels for s in scores]
    true = [[n for n, t in zip(names, row) if t] for row in truth]
    return {"map": mean_average_precision(truth, scores), **tag_scores(tag_counts(true, proposed))}


def choose(scores: np.ndarray, truth: np.ndarray, names: list[str]) -> tuple[float, int | None, float]:
    """(threshold, top_k, val F1) with the best F1 on val; ties go to the lower threshold."""
    best = (-1.0, 0.0, None)
    for top_k in (None, 3):
        for t in THRESHOLDS:
            f1 = figures(scores, truth, names, float(t), top_k)["tag_f1"]
            if f1 > best[0]:
                best = (f1, float(t), top_k)
    return best[1], best[2], best[0]


def toy(n_val: int, n_test: int) -> None:
    val, test = split_samples("val", n_val), split_samples("test", n_test)
    base = Labeler.from_spec("toyclip", "toyworld")
    shipped = base.tagger_config
    names = [c.name for c in base.labelset.classes]
    tv, tt = truth_matrix(val, names), truth_matrix(test, names)
    print(f"Tags on the toy world, toyclip: threshold chosen on {n_val} val images, figures on {n_test} test images\n")
    print("| tagger | val F1 | threshold | top-k | test mAP | test F1 | exactly right |\n|---|---|---|---|---|---|---|")
    winner = None
    for name, settings in VARIANTS.items():
        base._tagger, base.tagger_config = None, dataclasses.replace(TaggerConfig(), **settings)
        sv = np.concatenate([base.tagger.scores([s.image for s in val[i:i + 64]]) for i in range(0, n_val, 64)])
        st = np.concatenate([base.tagger.scores([s.image for s in test[i:i + 64]]) for i in range(0, n_test, 64)])
        threshold, top_k, val_f1 = choose(sv, tv, names)
        f = figures(st, tt, names, threshold, top_k)
        print(f"| {name} | {val_f1:.3f} | {threshold:g} | {top_k or '-'} | {f['map']:.3f} | {f['tag_f1']:.3f} | "
              f"{f['tag_exact']:.3f} |", flush=True)
        if winner is None or val_f1 > winner[0]:
            winner = (val_f1, name, {**settings, "threshold": threshold, "top_k": top_k})
    print(f"\nbest on val: {winner[1]}\ntagger: {winner[2]}")
    base._tagger, base.tagger_config = None, shipped
    cost(base, [s.image for s in test[:256]], [list(s.labels) for s in test[:256]],
         f"toyclip, 64x64 test images, the shipped tagger ({shipped.kind})")


def cost(labeler: Labeler, images: list[np.ndarray], labels: list[list[str]], what: str, batch: int = 16,
         repeats: int = 2) -> None:
    """ms per image of the labeller's tagger and of its CAMs, best of `repeats`."""
    def timed(fn) -> float:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for i in range(0, len(images), batch):
                fn(i)
            best = min(best, time.perf_counter() - start)
        return best / len(images) * 1e3

    labeler.tags(images[:2])  # build the tagger (text features) outside the timing
    tag_ms = timed(lambda i: labeler.tags(images[i:i + batch]))
    cam_ms = timed(lambda i: labeler.cams(images[i:i + batch], labels[i:i + batch]))
    print(f"\nCost, {what}, batches of {batch}, precision {labeler.precision}:")
    print(f"| step | ms per image |\n|---|---|\n| tagger | {tag_ms:.1f} |\n| CAMs ({labeler.method.__class__.__name__}) | "
          f"{cam_ms:.1f} |\n| tagger / CAMs | {tag_ms / cam_ms:.2f} |", flush=True)


def masks(n_val: int, n_test: int) -> None:
    from wsss_ray.metrics import accumulate, scores

    base = Labeler.from_spec("toyclip", "toyworld")

    def miou(labeler: Labeler, samples, given: bool) -> float:
        def pairs():
            for i in range(0, len(samples), 32):
                batch = samples[i:i + 32]
                results = labeler.label([s.image for s in batch], [list(s.labels) for s in batch] if given else None)
                yield from ((s.mask, r.mask) for s, r in zip(batch, results))
        return scores(accumulate(pairs(), len(labeler.labelset) + 1)).miou

    print(f"Masks from the tagger's labels (toyclip, its tagger settings but min_label_quality) against the given "
          f"labels'\n\n| labels | val mIoU ({n_val}) | share | test mIoU ({n_test}) | share |\n|---|---|---|---|---|")
    val, test = split_samples("val", n_val), split_samples("test", n_test)
    given = (miou(base, val, True), miou(base, test, True))
    print(f"| given | {given[0]:.4f} | 100 % | {given[1]:.4f} | 100 % |", flush=True)
    for check in (0.0, 0.15, 0.2, 0.25, 0.3, 0.35):
        labeler = Labeler(base.method, base.post, base.precision,
                          dataclasses.replace(base.tagger_config, min_label_quality=check))
        v, t = miou(labeler, val, False), miou(labeler, test, False)
        print(f"| proposed, min_label_quality {check} | {v:.4f} | {100 * v / given[0]:.1f} % | {t:.4f} | "
              f"{100 * t / given[1]:.1f} % |", flush=True)
    check = base.tagger_config.min_label_quality or 0.3
    v, t = checked_given(base, val, check), checked_given(base, test, check)
    print(f"| given, the same check ({check}) | {v:.4f} | {100 * v / given[0]:.1f} % | {t:.4f} | "
          f"{100 * t / given[1]:.1f} % |", flush=True)


def checked_given(labeler: Labeler, samples, check: float) -> float:
    """mIoU of the masks from the given labels, had they been checked as proposed ones are."""
    from wsss_ray.crf import full_size_mask
    from wsss_ray.labeler import verify_labels
    from wsss_ray.metrics import accumulate, scores

    def pairs():
        for i in range(0, len(samples), 32):
            batch = samples[i:i + 32]
            cams = labeler.cams([s.image for s in batch], [list(s.labels) for s in batch])
            for s, cam in zip(batch, cams):
                v = verify_labels(s.image, cam, labeler.post, check)
                ids = labeler.class_ids([s.labels[k] for k in v.kept])
                yield s.mask, full_size_mask(v.marginals, v.small, ids, labeler.post, s.image)[0]
    return scores(accumulate(pairs(), len(labeler.labelset) + 1)).miou


def real(folder: str) -> None:
    labeler = Labeler.from_spec("ViT-B-16-quickgelu", "voc")
    side = decode_side(labeler.method.config, labeler.post.crf)
    paths = sorted(p for p in Path(folder).glob("*/images/*") if p.suffix.lower() in (".jpg", ".png"))
    images = [decode_within(p.read_bytes(), max_side=side)[0] for p in paths]
    sizes = sorted({img.shape[:2] for img in images})
    print(f"{len(images)} photos, sizes {sizes[0]} to {sizes[-1]}, ViT-B/16 with random weights, "
          f"tagger input {labeler.tagger.side}x{labeler.tagger.side}")
    tags = labeler.tags(images)
    print(f"labels proposed per photo (meaningless with random weights): mean {np.mean([len(t.labels) for t in tags]):.1f}")
    cost(labeler, images, [["person", "dog"]] * len(images), "ViT-B/16 (random weights), the sample photos", batch=4,
         repeats=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--real", help="folder of sample photos (*/images/*): the tagger's cost at ViT-B/16 size")
    parser.add_argument("--masks", action="store_true", help="the masks from proposed labels against given ones")
    a = parser.parse_args()
    if a.real:
        real(a.real)
    elif a.masks:
        masks(a.val, a.test)
    else:
        toy(a.val, a.test)


if __name__ == "__main__":
    main()
