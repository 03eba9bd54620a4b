"""The labelling job end to end against the reference CLIP-ES flow, on the same CPU cores.

Both label the same photos with the same weights: a randomly initialised ViT-B/16 with
QuickGELU (the architecture of OpenAI's CLIP, which CLIP-ES uses; no weights can be
downloaded here and speed does not depend on them), saved once and loaded by both.
The photos are the 41 MSRC photos of ../shared/data/real-sample, upscaled to 500x375
(VOC size), `--repeat` times (copies mirrored, each with its own id). Settings: CLIP-ES's
ViT-B/16 defaults (one scale, CAA, background (1 - max cam), the reference CRF kernel).

The reference flow, rebuilt from its published algorithm: one process computes the CAMs
of the whole set, float32, one image at a time, the last block forward and backward once
per class, and saves them (.npy); then a joblib pool of `--cpus` processes runs
pydensecrf on each image and writes its mask PNG.

This project: the labeller as the job runs it (one last-block forward per image, bf16
autocast on CPUs with native bf16, the torch CRF backend).

1. Per image, one thread: the reference flow with one thread and a pool of one, against
   the labeller called one image at a time; masks compared pixel by pixel.
2. The whole set on `--cpus` cores: the reference flow (torch on `--cpus` threads, then
   the pool) against ``jobs/pseudolabel.py`` on a local Ray with `--cpus` CPUs, in a few
   actor layouts. Wall time of each whole process, start-up and model loading included.
3. The confident set, one thread (``--part 3``): the masks CLIP-ES trains on are the CRF's
   argmax with 255 where its marginal is below 0.95. The reference's (float32 CAMs in its
   order, pydensecrf, that threshold) against the labeller's as shipped (its mask with
   ``masks.ignore_below(..., 0.95)``, as ``export --min-confidence 0.95`` writes it) per
   precision and CRF backend: thresholded masks equal pixel for pixel (255 counts as a
   value), the CAMs' Pearson r, and the time per image of each whole flow.

    .venv/bin/python benchmarks/reference_flow.py [--repeat 4] [--single 20] [--cpus 2] [--layouts 0 1 2] [--part 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA: list[str] = []  # --data, passed on to the measured runs
OURS: list[str] = []  # --method, the same
MODEL = "ViT-B-16-quickgelu"
JOB_LAYOUTS = {
    "1 CAM actor (the defaults)": [],
    "2 CAM actors (--concurrency 2 --num-cpus 0.5)": ["--concurrency", "2", "--num-cpus", "0.5"],
    "2 CAM actors, --batch-size 4": ["--concurrency", "2", "--num-cpus", "0.5", "--batch-size", "4"],
    "2 CAM actors, --crf-backend torch": ["--concurrency", "2", "--num-cpus", "0.5", "--crf-backend", "torch"],
}


def prepare(work: Path, data: Path, repeat: int) -> list[dict]:
    """Weights, upscaled photos (+ mirrored copies) and a manifest under `work`; returns the items."""
    import open_clip
    import torch
    from PIL import Image

    torch.manual_seed(0)
    torch.save(open_clip.create_model(MODEL).state_dict(), work / "weights.pt")
    (work / "images").mkdir()
    items = []
    for line in (data / "manifest.jsonl").read_text().splitlines():
        item = json.loads(line)
        image = Image.open(data / item["image"]).convert("RGB").resize((500, 375), Image.BICUBIC)
        mask = Image.open(data / item["mask"]).resize((500, 375), Image.NEAREST)
        for copy in range(repeat):
            name = f"{item['id']}-{copy}"
            flip = Image.Transpose.FLIP_LEFT_RIGHT
            (image.transpose(flip) if copy % 2 else image).save(work / "images" / f"{name}.png")
            (mask.transpose(flip) if copy % 2 else mask).save(work / "images" / f"{name}_gt.png")
            items.append({"id": name, "image": f"images/{name}.png", "labels": item["labels"],
                          "mask": f"images/{name}_gt.png"})
    (work / "manifest.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    return items


def settings(work: Path, labelset: str, **overrides):
    from wsss_ray.config import resolve_label_job

    return resolve_label_job({"model": MODEL, "pretrained": str(work / "weights.pt"), "labelset": labelset,
                              **overrides})


def reference_method(config, device: str = "cpu"):
    """CLIP-ES as the reference runs it: float32, the last block forward and backward once per class."""
    from wsss_ray.cam.clip_es import ClipESReferenceOrder
    from wsss_ray.clip import load_clip
    from wsss_ray.labelset import load_labelset

    return ClipESReferenceOrder(config.method_config, load_clip(config.model, config.pretrained, device),
                                load_labelset(config.labelset))


def reference_crf(image_path: str, cam_path: str, ids: list[int], post, out_path: str) -> None:
    """The reference's second script, for one image: CAMs -> background -> pydensecrf -> mask PNG."""
    import dataclasses

    from wsss_ray.labeler import refine, to_probs
    from wsss_ray.masks import encode_png
    from wsss_ray.store import load_image

    image = load_image(image_path)
    post = dataclasses.replace(post, crf=dataclasses.replace(post.crf, backend="pydensecrf"))
    mask, _ = refine(image, to_probs(np.load(cam_path), post), ids, post)
    Path(out_path).write_bytes(encode_png(mask))


def reference_flow(work: Path, items: list[dict], labelset: str, threads: int, jobs: int, out: Path,
                   device: str = "cpu") -> dict:
    """Runs both reference phases (the CAMs on `device`); returns the seconds of the whole and of
    loading the model."""
    import torch
    from joblib import Parallel, delayed

    from wsss_ray.store import load_image

    start = time.perf_counter()
    torch.set_num_threads(threads)
    config = settings(work, labelset, method="clip-es", precision="fp32")
    method = reference_method(config, device)
    loaded = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    ids = {}
    for item in items:  # phase 1: every CAM, one image at a time, saved
        ids[item["id"]] = [method.labelset.index(l) for l in item["labels"]]
        cams = method.cams([load_image(str(work / item["image"]))], [ids[item["id"]]])[0]
        np.save(out / f"{item['id']}.npy", cams)
    Parallel(n_jobs=jobs)(delayed(reference_crf)(str(work / i["image"]), str(out / f"{i['id']}.npy"), ids[i["id"]],
                                                 config.post, str(out / f"{i['id']}.png")) for i in items)
    return {"seconds": time.perf_counter() - start, "loading": loaded - start}


def ours_serial(work: Path, items: list[dict], labelset: str, out: Path) -> dict:
    """The labeller (the job's defaults, or --method's), one image at a time on this thread; seconds as above."""
    from wsss_ray.labeler import Labeler
    from wsss_ray.masks import encode_png
    from wsss_ray.store import load_image

    start = time.perf_counter()
    labeler = Labeler.from_config(settings(work, labelset, **({"method": OURS[0]} if OURS else {})))
    loaded = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for item in items:
        result = labeler.label([load_image(str(work / item["image"]))], [item["labels"]])[0]
        (out / f"{item['id']}.png").write_bytes(encode_png(result.mask))
    return {"seconds": time.perf_counter() - start, "loading": loaded - start}


def agreement(a: Path, b: Path, items: list[dict]) -> list[float]:
    from wsss_ray.masks import decode_png

    return [float((decode_png((a / f"{i['id']}.png").read_bytes())
                   == decode_png((b / f"{i['id']}.png").read_bytes())).mean()) for i in items]


def miou(masks: Path, work: Path, items: list[dict], classes: int) -> float:
    from wsss_ray.masks import decode_png
    from wsss_ray.metrics import accumulate, scores
    from wsss_ray.store import load_mask

    pairs = ((load_mask(str(work / i["mask"])).astype(np.int64), decode_png((masks / f"{i['id']}.png").read_bytes()))
             for i in items)
    return scores(accumulate(((np.where(gt == 255, -1, gt), m) for gt, m in pairs), classes)).miou


def job_masks(output: Path, folder: Path) -> None:
    """The job's Parquet rows -> one mask PNG per id (to compare with the reference's)."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    for path in output.rglob("*.parquet"):
        for row in pq.read_table(path, columns=["id", "mask"]).to_pylist():
            (folder / f"{row['id']}.png").write_bytes(row["mask"])


def run_self(*args: str, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    data = (["--data", DATA[0]] if DATA else []) + (["--method", OURS[0]] if OURS else [])
    done = subprocess.run([sys.executable, __file__, *args, *data], env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/real-sample/msrc"))
    parser.add_argument("--repeat", type=int, default=4, help="copies of each photo in the whole-set runs")
    parser.add_argument("--single", type=int, default=20, help="photos in the one-thread per-image comparison")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(),
                        help="threads and pool size of the reference flow (the job uses the whole machine)")
    parser.add_argument("--work", help="keep the files here (default: a temporary folder)")
    parser.add_argument("--part", type=int, choices=(1, 2, 3), help="run only this part (default: 1 and 2)")
    parser.add_argument("--method", help="the project's CAM method in parts 1 and 2 (default: the job's, excel); "
                                         "the reference flow is CLIP-ES's whatever it is")
    parser.add_argument("--layouts", type=int, nargs="+", choices=range(len(JOB_LAYOUTS)),
                        default=list(range(len(JOB_LAYOUTS))), help="the job layouts of part 2, by position")
    parser.add_argument("--as", dest="role", choices=("reference", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    labelset = str(Path(args.data) / "labelset.yaml")
    DATA[:] = [args.data]  # the measured runs in their own processes read the same photos
    OURS[:] = [args.method] if args.method else []
    if args.role:  # one measured run, in its own process
        work = Path(args.work)
        items = [json.loads(l) for l in (work / "manifest.jsonl").read_text().splitlines()][:args.first]
        if args.role == "reference":
            timing = reference_flow(work, items, labelset, args.threads, args.jobs, Path(args.out))
        else:
            import torch

            torch.set_num_threads(args.threads)
            timing = ours_serial(work, items, labelset, Path(args.out))
        print(json.dumps({**timing, "images": len(items)}))
        return

    from wsss_ray.labelset import load_labelset

    classes = len(load_labelset(labelset)) + 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if (work / "manifest.jsonl").is_file():  # prepared by an earlier run with the same --work
            items = [json.loads(l) for l in (work / "manifest.jsonl").read_text().splitlines()]
        else:
            items = prepare(work, Path(args.data), args.repeat)
        if args.part == 3:
            confident_set(work, items[::args.repeat][:args.single], labelset)
            return
        if args.part != 2:
            per_image(work, items[:args.single], classes)
        if args.part != 1:
            whole_set(work, items, labelset, args.cpus, classes, args.layouts)


CONFIDENT_SETTINGS = {  # name: (precision, CRF backend)
    "fp32, crf pydensecrf": ("fp32", "pydensecrf"),
    "bf16 (`precision: auto`), crf `auto` (pydensecrf on a CPU): **as shipped**": ("auto", "auto"),
    "fp32, crf torch (grid up to 4x coarser)": ("fp32", "torch"),
    "bf16, crf torch (grid up to 4x coarser): the default before": ("auto", "torch"),
}


def confident_set(work: Path, items: list[dict], labelset: str, threshold: float = 0.95) -> None:
    """Part 3: thresholded masks against the reference's, per precision and CRF backend (one thread)."""
    import torch

    from wsss_ray.crf import dense_crf
    from wsss_ray.labeler import Labeler, to_probs
    from wsss_ray.masks import class_values, ignore_below
    from wsss_ray.store import load_image

    torch.set_num_threads(1)
    images = [load_image(str(work / i["image"])) for i in items]
    config = settings(work, labelset, method="clip-es", precision="fp32")
    method = reference_method(config)
    reference, ref_cams, ref_seconds = [], [], 0.0
    for item, image in zip(items, images):
        start = time.perf_counter()
        ids = [method.labelset.index(l) for l in item["labels"]]
        cams = method.cams([image], [ids])[0]
        marginals = dense_crf(image, to_probs(cams, config.post), dataclasses.replace(config.post.crf,
                                                                                      backend="pydensecrf"))
        mask = class_values(ids)[marginals.argmax(0)]
        reference.append(np.where(marginals.max(0) < threshold, 255, mask))
        ref_seconds += time.perf_counter() - start
        ref_cams.append(cams)
    ref_seconds /= len(items)
    print(f"\n3. the confident set (>= {threshold}), {len(items)} photos at 500x375, one thread "
          f"(reference: {ref_seconds:.3f} s/img)\n")
    print("| project settings | CAM r (median) | thresholded masks agree (median / lowest) | s/img | "
          "end-to-end time vs reference |\n|---|---|---|---|---|")
    for name, (precision, backend) in CONFIDENT_SETTINGS.items():
        run = settings(work, labelset, method="clip-es", precision=precision, post={"crf": {"backend": backend}})
        labeler = Labeler.from_config(run)
        agree, r, seconds = [], [], 0.0
        for item, image, ref, ref_cam in zip(items, images, reference, ref_cams):
            start = time.perf_counter()
            result = labeler.label([image], [item["labels"]])[0]
            seconds += time.perf_counter() - start
            agree.append(float((ignore_below(result.mask, result.confidence, threshold) == ref).mean()))
            r.append(float(np.corrcoef(result.cams.ravel(), ref_cam.ravel())[0, 1]))
        seconds /= len(items)
        print(f"| {name} | {np.median(r):.4f} | {100 * np.median(agree):.2f} % / {100 * min(agree):.2f} % | "
              f"{seconds:.3f} | x{seconds / ref_seconds:.2f} |", flush=True)


def per_image(work: Path, items: list[dict], classes: int) -> None:
    """Part 1: one thread, one image at a time, after the model is loaded."""
    common = ["--work", str(work), "--first", str(len(items)), "--threads", "1"]
    ref = run_self("--as", "reference", *common, "--jobs", "1", "--out", str(work / "ref1"), threads=1)
    ours = run_self("--as", "ours", *common, "--out", str(work / "ours1"), threads=1)
    agree = agreement(work / "ref1", work / "ours1", items)
    print(f"1. per image, one thread, {len(items)} photos at 500x375 (after the model is loaded):")
    print("| flow | s/img | vs reference | loading the model, s |")
    print("|---|---|---|---|")
    r = (ref["seconds"] - ref["loading"]) / ref["images"]
    o = (ours["seconds"] - ours["loading"]) / ours["images"]
    print(f"| reference flow | {r:.3f} | 1.00x time | {ref['loading']:.1f} |")
    print(f"| this project's labeller | {o:.3f} | **{o / r:.2f}x time** ({r / o:.2f}x faster) | "
          f"{ours['loading']:.1f} |")
    print(f"masks equal to the reference's on {100 * np.median(agree):.2f} % of pixels (median over photos; "
          f"mean {100 * np.mean(agree):.2f} %, lowest {100 * min(agree):.2f} %); mIoU against the ground truth: "
          f"reference {miou(work / 'ref1', work, items, classes):.4f}, "
          f"ours {miou(work / 'ours1', work, items, classes):.4f}", flush=True)


def whole_set(work: Path, items: list[dict], labelset: str, cpus: int, classes: int, layouts: list[int]) -> None:
    """Part 2: every image, the reference flow on `cpus` cores against the job, whole processes timed."""
    print(f"\n2. {len(items)} images at 500x375 on this machine's {cpus} cores, wall time of the whole process:")
    print("| flow | seconds | images/s | vs reference flow |")
    print("|---|---|---|---|")
    ref = run_self("--as", "reference", "--work", str(work), "--threads", str(cpus), "--jobs", str(cpus),
                   "--out", str(work / "ref"), threads=cpus)
    rate = len(items) / ref["seconds"]
    notes = []
    print(f"| reference flow (torch {cpus} threads, then a pool of {cpus}) | {ref['seconds']:.1f} | "
          f"{rate:.3f} | 1.00x |", flush=True)
    for name, flags in (list(JOB_LAYOUTS.items())[i] for i in layouts):
        output = work / f"job-{len(notes)}"
        shutil.rmtree(output, ignore_errors=True)  # a job resumes into its output: a kept --work would skip every row
        cmd = [sys.executable, "jobs/pseudolabel.py", "--input", str(work / "manifest.jsonl"), "--labelset",
               labelset, "--model", MODEL, "--pretrained", str(work / "weights.pt"), "--output", str(output),
               "--mlflow-uri", f"sqlite:///{work / 'mlflow.db'}", *(["--method", OURS[0]] if OURS else []), *flags]
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode:
            notes.append(f"job, {name}: failed: {done.stderr[-2000:]}")
            continue
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        job_masks(output, work / f"masks-{len(notes)}")
        agree = agreement(work / "ref", work / f"masks-{len(notes)}", items)
        print(f"| job, {name} | {seconds:.1f} | {len(items) / seconds:.3f} | "
              f"**{len(items) / seconds / rate:.2f}x** |", flush=True)
        notes.append(f"job, {name}: {summary['ok']} ok, mIoU {summary['miou']:.4f}, masks equal to the reference "
                     f"flow's on {100 * np.median(agree):.2f} % of pixels (median)")
    print("\n".join(notes + [f"reference flow: mIoU {miou(work / 'ref', work, items, classes):.4f}"]))


if __name__ == "__main__":
    main()
