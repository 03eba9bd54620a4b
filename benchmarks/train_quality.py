"""Val mIoU of a tiny segmentation net trained on toy-world pseudo-masks: CGL vs CE vs exact masks.

On a fresh local Ray instance (2 CPUs by default):
1. generate the toy train (seeds 0..) and val (seeds 1_000_000..) splits;
2. pseudo-label both with the toy config (toyclip's bundled label settings,
   wsss_ray/weights/toyclip/label_config.yaml; the mask is the full argmax and the
   confidence column is intact, so CGL and CE differ); report the val pseudo-masks'
   own mIoU;
3. write the train split's exact masks in the same schema (the upper bound);
4. train ``--arch tiny`` with 2 workers for --epochs on each: CGL (0.95), CE, exact;
   report val mIoU (best epoch and last epoch);
5. samples/s of 1 vs 2 workers (the exact-mask input, --throughput-epochs epochs each).
Every figure is measured in this run. Smoke run: --n-train 64 --n-val 16 --epochs 2.

    .venv/bin/python benchmarks/train_quality.py [--n-train 1000 --n-val 200 --epochs 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path


def pseudo_label(manifest: str, output: str) -> dict:
    from wsss_ray.config import resolve_label_job
    from wsss_ray.pipeline import run

    # defaults < toyclip's bundled label_config.yaml (the toy config) < these settings
    config = resolve_label_job({"model": "toyclip", "input": manifest, "output": output})
    return run(config, progress_interval=60)


def write_ground_truth(source: str, output: str, method: str = "ground-truth") -> int:
    """Write the source's ground-truth masks (confidence 255 everywhere) as an output in OUTPUT_SCHEMA.

    The upper bound for training on pseudo-masks; items without a mask are skipped.
    Returns the number of rows written.
    """
    import numpy as np
    import pyarrow.parquet as pq

    from wsss_ray.store import atomic_write
    from wsss_ray.masks import encode_png
    from wsss_ray.stages import objects, output_table
    from wsss_ray.store import load_mask, read_source

    items = [it for it in read_source(source) if it.mask]
    masks = [load_mask(it.mask) for it in items]
    n = len(items)
    batch = {
        "id": [it.id for it in items], "image": [it.image for it in items],
        "labels": objects([list(it.labels) for it in items]),
        "width": np.array([m.shape[1] for m in masks], np.int32),
        "height": np.array([m.shape[0] for m in masks], np.int32),
        "status": ["ok"] * n, "error": [None] * n,
    }
    pngs = [(encode_png(m), encode_png(np.full(m.shape, 255, np.uint8), palette=False)) for m in masks]
    table = output_table(batch, pngs, labelset=None, model=None, method=method, run_id=None)
    atomic_write(f"{output.rstrip('/')}/part-ground-truth.parquet",
                 lambda fs, tmp: pq.write_table(table, tmp, filesystem=fs))
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-val", type=int, default=200)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--throughput-epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.003)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--workdir", default="outputs/bench-train", help="wiped first")
    a = p.parse_args(argv)

    import ray

    from wsss_ray.config import TrainConfig
    from wsss_ray.labelset import load_labelset
    from wsss_ray.store import evaluate_output
    from wsss_ray.toyworld import SPLIT_SEEDS, generate
    from wsss_ray.train.trainer import run as train

    work = Path(a.workdir).absolute()
    shutil.rmtree(work, ignore_errors=True)
    train_manifest = str(generate(work / "train", a.n_train, seed=SPLIT_SEEDS["train"]))
    val_manifest = str(generate(work / "val", a.n_val, seed=SPLIT_SEEDS["val"]))
    ray.init(address="local", num_cpus=a.cpus, include_dashboard=False, log_to_driver=False)
    rows: list[tuple[str, str]] = []
    t = time.time()
    pseudo_label(train_manifest, str(work / "pl-train"))
    rows.append(("pseudo-labelling the train split (s)", f"{time.time() - t:.1f}"))
    pseudo_label(val_manifest, str(work / "pl-val"))
    val_pl = evaluate_output(str(work / "pl-val"), val_manifest, len(load_labelset("toyworld")) + 1, truth=a.n_val)
    rows.append(("val mIoU of the pseudo-masks themselves (toy config, no confidence threshold)", f"{val_pl:.4f}"))
    write_ground_truth(train_manifest, str(work / "gt-train"))

    base = TrainConfig(input=str(work / "pl-train"), val=val_manifest, epochs=a.epochs, batch_size=a.batch_size,
                       lr=a.lr, num_workers=2, arch="tiny")
    runs = [("CGL (threshold 0.95) on pseudo-masks", dict(loss="cgl", cgl_threshold=0.95)),
            ("CE on pseudo-masks", dict(loss="ce")),
            ("CE on exact masks (upper bound)", dict(loss="ce", input=str(work / "gt-train")))]
    for name, changes in runs:
        out = work / ("run-" + name.split()[0].lower() + ("-exact" if "exact" in name else ""))
        s = train(dataclasses.replace(base, output=str(out), **changes))
        last = s["history"][-1].get("val_miou")
        rows.append((f"val mIoU, {name}, best epoch ({s['best_epoch']}/{s['epochs']})", f"{s['best_miou']:.4f}"))
        rows.append((f"val mIoU, {name}, last epoch", f"{last:.4f}"))
        rows.append((f"wall time, {name} (s)", f"{s['seconds']:.1f}"))
    for workers in (1, 2):
        s = train(dataclasses.replace(base, input=str(work / "gt-train"), output=str(work / f"tp-{workers}"),
                                      epochs=a.throughput_epochs, num_workers=workers))
        rows.append((f"train samples/s, {workers} worker(s), mean over {a.throughput_epochs} epochs",
                     f"{s['samples_per_s']:.1f}"))
    ray.shutdown()

    print(f"\ntoy world: {a.n_train} train / {a.n_val} val images, arch tiny, {a.epochs} epochs, "
          f"batch {a.batch_size}/worker, lr {a.lr}, {a.cpus} CPUs\n")
    print("| measurement | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
