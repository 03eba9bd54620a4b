"""What the review loop is worth: train on pseudo-masks where 10 % were corrected, chosen by
lowest ``quality``, at random, or none.

On a fresh local Ray instance (2 CPUs):
1. generate the toy train (seeds 0..) and val (seeds 1,000,000..) splits and pseudo-label
   both with toyclip's settings (the job writes ``quality``);
2. for each choice, store the exact masks of the chosen 10 % of the train rows as reviewed
   masks (``wsss_ray.store.reviewed.write_reviews``, what ``python -m wsss_ray.review import``
   writes), so training takes them through its own path (reviewed mask, every pixel trusted):
   (a) the lowest ``quality``, (b) a random 10 % (a new draw per repeat), (c) none;
3. train ``--arch tiny`` (CE, the better loss on these masks in docs/RESULTS.md) for each,
   --repeats times, and report val mIoU (best epoch) per run, the mean and the spread.
Also: the true mIoU of the chosen masks (how wrong the corrected masks were).

    .venv/bin/python benchmarks/review_loop.py [--n-train 1000 --n-val 100 --epochs 16 --repeats 3]

Resumable: a finished run's figures are kept in WORKDIR/results.json and not run again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-val", type=int, default=100)
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--share", type=float, default=0.10)
    p.add_argument("--workdir", default="outputs/bench-review-loop")
    a = p.parse_args(argv)

    import ray

    from wsss_ray.config import TrainConfig, resolve_label_job
    from wsss_ray.masks import decode_png
    from wsss_ray.store import read_output
    from wsss_ray.pipeline import run as label
    from wsss_ray.store import write_reviews
    from wsss_ray.store import load_mask, read_source
    from wsss_ray.toyworld import SPLIT_SEEDS, generate
    from wsss_ray.train.trainer import run as train

    work = Path(a.workdir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    results_file = work / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    manifests = {}
    for split, n in (("train", a.n_train), ("val", a.n_val)):
        manifests[split] = str(generate(work / split, n, seed=SPLIT_SEEDS[split]))
        config = resolve_label_job({"model": "toyclip", "input": manifests[split], "output": str(work / f"pl-{split}")})
        label(config)  # resumes: a finished split is skipped

    truth = {it.id: it.mask for it in read_source(manifests["train"])}
    rows = read_output(str(work / "pl-train"), ["id", "status", "mask", "quality"]).to_pylist()
    rows = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["id"])
    k = int(round(a.share * len(rows)))

    def image_miou(row) -> float:
        gt, mask = load_mask(truth[row["id"]]), decode_png(row["mask"])
        return float(np.mean([((gt == c) & (mask == c)).sum() / ((gt == c) | (mask == c)).sum()
                              for c in np.union1d(np.unique(gt), np.unique(mask))]))

    def chosen(choice: str, repeat: int) -> list[dict]:
        if choice == "lowest quality":
            return sorted(rows, key=lambda r: (r["quality"], r["id"]))[:k]
        if choice == "random":
            picks = np.random.default_rng(repeat).choice(len(rows), size=k, replace=False)
            return [rows[i] for i in sorted(picks)]
        return []

    base = TrainConfig(val=manifests["val"], epochs=a.epochs, batch_size=16, lr=0.003, num_workers=2, arch="tiny",
                       loss="ce")
    for repeat in range(a.repeats):
        for choice in ("lowest quality", "random", "none"):
            key = f"{choice}/{repeat}"
            if key in results:
                continue
            picks = chosen(choice, repeat)
            folder = work / f"in-{choice.replace(' ', '-')}-{repeat}"
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(work / "pl-train", folder, ignore=shutil.ignore_patterns(".*", "_*"))
            if picks:
                reviews = []
                for r in picks:
                    mask = load_mask(truth[r["id"]])
                    reviews.append({"id": r["id"], "mask": mask, "width": mask.shape[1], "height": mask.shape[0],
                                    "reviewer": "exact mask", "reviewed_at": "2026-12-03T00:00:00",
                                    "source": "benchmarks/review_loop.py"})
                write_reviews(str(folder), reviews)
            out = work / f"run-{choice.replace(' ', '-')}-{repeat}"
            shutil.rmtree(out, ignore_errors=True)
            s = train(dataclasses.replace(base, input=str(folder), output=str(out), seed=repeat))
            results[key] = {"val_miou": s["best_miou"], "best_epoch": s["best_epoch"],
                            "last_miou": s["history"][-1].get("val_miou"), "reviewed_masks": s["reviewed_masks"],
                            "chosen_masks_miou": float(np.mean([image_miou(r) for r in picks])) if picks else None,
                            "seconds": s["seconds"]}
            results_file.write_text(json.dumps(results, indent=1))
            print(key, results[key], flush=True)
    ray.shutdown()

    print(f"\ntoy world: {a.n_train} train / {a.n_val} val images, {k} masks corrected ({a.share:.0%}), arch tiny, CE, "
          f"{a.epochs} epochs, 2 workers, {a.repeats} repeats\n")
    print("| corrected masks chosen by | val mIoU per run (best epoch) | mean | spread (max - min) | "
          "true mIoU of the chosen masks |\n|---|---|---|---|---|")
    for choice in ("lowest quality", "random", "none"):
        runs = [results[f"{choice}/{r}"] for r in range(a.repeats) if f"{choice}/{r}" in results]
        vals = [r["val_miou"] for r in runs]
        chosen_miou = [r["chosen_masks_miou"] for r in runs if r["chosen_masks_miou"] is not None]
        print(f"| {choice} | {', '.join(f'{v:.4f}' for v in vals)} | {np.mean(vals):.4f} | "
              f"{max(vals) - min(vals):.4f} | {f'{np.mean(chosen_miou):.3f}' if chosen_miou else '-'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
