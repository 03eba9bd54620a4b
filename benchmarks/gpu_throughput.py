"""One lent GPU, one command: the labeller's GPU path against the reference CLIP-ES flow.

    python benchmarks/gpu_throughput.py --out OUT_DIR            # about 15 minutes on one GPU
    python benchmarks/gpu_throughput.py --out OUT_DIR --quick    # a dry run of every part (CPU or GPU)

Model: a randomly initialised ViT-B/16 with QuickGELU (OpenAI CLIP's architecture, which
CLIP-ES uses; nothing can be downloaded here, and speed does not depend on the weights),
saved once, loaded by every part. Methods: the job's default, ExCEL's training-free path
(``excel``), and CLIP-ES, each with its ViT-B/16 defaults. Images: toy-world images upscaled to 500x375 (VOC size), two classes each.
The parts, in the order device time should be spent:

- ``precision_probe``: what ``precision: auto`` measures when a labeller is built on this
  device (``wsss_ray.precision``): seconds per image and agreement with float32 (CAM r,
  thresholded masks) of each candidate, and the choice. On a CPU this gives the CPU's
  bf16 figures that ``precision.TOLERANCE`` is taken from.
- ``cams``: per method (excel, clip-es), precision and batch size 1..64, CAM images/s of the GPU work alone (inputs
  already on the device, CAMs at grid size), of the whole ``cam_tensors`` call (resize and
  normalise on the device, CAMs, upsampling), and of every per-image step
  (``Labeler.masks_on_device``: CRF, quality, mask, confidence, one copy back per
  batch); agreement with float32 at the largest batch (CAM r, argmax, masks at 0.95).
- ``crf``: the torch CRF on the device at 500x375 (full resolution: ``auto``'s choice there;
  and the coarse grid), pydensecrf on one CPU core; thresholded masks against pydensecrf's.
- ``profile``: one batch of the CAM actor (``pipeline.CamStage``) under torch.profiler:
  device time against host time per image, and the host's largest items.
- ``host_steps``: what is left on the host per image, timed: decode, upload, the copy back
  and its unpacking, the PNGs.
- ``job``: ``pipeline.run`` with one GPU actor over ``--images`` (default 2,048) images, the
  job's defaults; rows/s over the whole run and in the steady state (from the first output
  file written to the last), and the GPU's busy share sampled by nvidia-smi in that window.
- ``reference``: the reference flow (``benchmarks/reference_flow.py``: float32 CAMs in the
  per-class forward/backward order, one image at a time, on the GPU; then pydensecrf on
  all CPU cores in a joblib pool) over the same images; and the job's ratio to it.
  **Goal: the job at least 5x the reference flow's images/s, the GPU busy at least 70 % of
  the steady state.**
- ``train_gpu`` and ``learn_prompts_gpu``: Ray Train (NCCL) and SemPLeS prompt learning on the GPU.

Each part prints one JSON line and is written to OUT_DIR/gpu.json (the date, the GPU, the
CPU count and the versions first); a part that fails records its error and the others run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

RESULTS: dict = {}
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"   # a CPU dry run checks the script before device time is spent
MODEL = "ViT-B-16-quickgelu"
PRECISIONS = ("fp32", "bf16", "fp16") if CUDA else ("fp32", "bf16")
CAM_METHODS = ("excel", "clip-es")


def part(name: str):
    def wrap(fn):
        def run(*a, **k):
            start = time.time()
            try:
                RESULTS[name] = fn(*a, **k)
            except Exception as e:  # noqa: BLE001 - record and go on to the next part
                RESULTS[name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-3000:]}
            RESULTS[name]["part_seconds"] = round(time.time() - start, 1)
            print(json.dumps({name: RESULTS[name]}), flush=True)
        return run
    return wrap


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def prepare(work: Path, n: int) -> list[dict]:
    """`n` toy-world images upscaled to 500x375 under `work` (manifest, masks) and the random
    weights; returns the manifest's items."""
    import open_clip
    from PIL import Image

    from wsss_ray.toyworld import SPLIT_SEEDS, generate

    manifest = generate(work, n, seed=SPLIT_SEEDS["test"])
    for p in (work / "images").glob("*.png"):
        Image.open(p).resize((500, 375), Image.BICUBIC).save(p)
    for p in (work / "masks").glob("*.png"):
        Image.open(p).resize((500, 375), Image.NEAREST).save(p)
    torch.manual_seed(0)
    torch.save(open_clip.create_model(MODEL).state_dict(), work / "weights.pt")
    return [json.loads(line) for line in manifest.read_text().splitlines()]


def labeller(work: Path, precision: str = "fp32", method: str | None = None, **post):
    """The labeller on the saved weights (`method` None: the job's default, excel)."""
    from wsss_ray.labeler import Labeler

    return Labeler.from_spec(MODEL, "toyworld", method=method, pretrained=str(work / "weights.pt"), device=DEVICE,
                             precision=precision, post=post or None)


def load(work: Path, items: list[dict], n: int) -> tuple[list[np.ndarray], list[list[str]]]:
    from wsss_ray.store import load_image

    return [load_image(str(work / i["image"])) for i in items[:n]], [i["labels"][:2] for i in items[:n]]


@part("precision_probe")
def precision_probe(work: Path) -> dict:
    import open_clip

    from wsss_ray import precision
    from wsss_ray.labeler import Labeler

    out = {"tolerance": vars(precision.TOLERANCE), "draws": []}
    for seed in (0, 1, 2):  # random weight draws: the agreement depends on the weights
        weights = work / f"weights-{seed}.pt"
        torch.manual_seed(seed)
        torch.save(open_clip.create_model(MODEL).state_dict(), weights)
        lab = Labeler.from_spec(MODEL, "toyworld", pretrained=str(weights), device=DEVICE, precision="fp32")
        trials = precision.measure(lab, tuple(p for p in PRECISIONS if p != "fp32"))
        out["draws"].append({"seed": seed, "chosen": precision.choose(trials), "trials": [
            {"precision": t.precision, "ms_per_image": round(1000 * t.seconds, 2), "cam_r": round(t.agreement.cam_r, 6),
             "masks": round(t.agreement.masks, 6)} for t in trials]})
    return out


def timed(fn, repeats: int) -> tuple[float, object]:
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    sync()
    return (time.perf_counter() - start) / repeats, out


@part("cams")
def cams(work: Path, items: list[dict], batches: list[int], repeats: int) -> dict:
    from wsss_ray.labeler import model_autocast
    from wsss_ray.masks import ignore_below

    images, labels = load(work, items, max(batches))
    rows, references = [], {}
    for method_name, name in [(m, p) for m in CAM_METHODS for p in PRECISIONS]:
        lab = labeller(work, name, method_name)
        lab.post_on_device = True
        method = lab.method
        size = method.input_size(375, 500, 1.0)  # CLIP-ES: the photo's own patch-aligned size; ExCEL: 320x320
        x_all = torch.stack([method.model_input(torch.from_numpy(im.copy()), size) for im in images]).to(DEVICE)
        ids = [lab.class_ids(lb) for lb in labels]
        for b in batches:
            def grid():
                with model_autocast(name, DEVICE):
                    return method._grid_cams(x_all[:b], ids[:b])

            def whole():
                return lab.cam_tensors(images[:b], labels[:b])

            def every_step():
                return lab.masks_on_device(images[:b], lab.cam_tensors(images[:b], labels[:b]), labels[:b])

            grid_s, _ = timed(grid, repeats)
            whole_s, tensors = timed(whole, repeats)
            steps_s, done = timed(every_step, max(1, repeats // 2))
            row = {"method": method_name, "precision": name, "batch": b,
                   "gpu_work_images_per_s": round(b / grid_s, 1),
                   "cam_tensors_images_per_s": round(b / whole_s, 1),
                   "every_step_images_per_s": round(b / steps_s, 1),
                   "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if CUDA else None}
            if b == max(batches):
                cams_host = [t.float().cpu().numpy() for t in tensors]
                masks = [ignore_below(m, c, 0.95) for m, c, *_ in done]
                reference = references.setdefault(method_name, (cams_host, masks))
                row["cam_r_vs_fp32"] = round(float(np.median([np.corrcoef(a.ravel(), r.ravel())[0, 1]
                                                              for a, r in zip(cams_host, reference[0])])), 6)
                row["cam_argmax_vs_fp32"] = round(float(np.median([(a.argmax(0) == r.argmax(0)).mean()
                                                                   for a, r in zip(cams_host, reference[0])])), 4)
                row["masks_at_0.95_vs_fp32"] = round(float(np.median([(m == r).mean()
                                                                      for m, r in zip(masks, reference[1])])), 4)
            if CUDA:
                torch.cuda.reset_peak_memory_stats()
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {"image": [375, 500], "rows": rows}


@part("crf")
def crf(work: Path, items: list[dict], n: int) -> dict:
    from wsss_ray.config import CrfConfig
    from wsss_ray.crf import dense_crf
    from wsss_ray.labeler import to_probs

    images, labels = load(work, items, n)
    lab = labeller(work)
    probs = [to_probs(c, lab.post) for c in lab.cams(images, labels)]
    out, reference = {"rows": []}, None
    threads = torch.get_num_threads()
    for name, config, device in (("pydensecrf, 1 CPU core", CrfConfig(backend="pydensecrf"), "cpu"),
                                 ("torch on the device, full resolution (auto's choice off a CPU)",
                                  CrfConfig(backend="torch", downsample=1), DEVICE),
                                 ("torch on the device, grid up to 4x coarser", CrfConfig(backend="torch"), DEVICE)):
        torch.set_num_threads(1 if device == "cpu" else threads)
        seconds, marginals = timed(lambda: [dense_crf(im, p, config, device) for im, p in zip(images, probs)], 1)
        confident = [np.where(m.max(0) < 0.95, 255, m.argmax(0)) for m in marginals]
        reference = reference or confident
        out["rows"].append({"crf": name, "ms_per_image": round(1000 * seconds / n, 2),
                            "masks_at_0.95_vs_pydensecrf": round(float(np.median(
                                [(a == b).mean() for a, b in zip(confident, reference)])), 4)})
    torch.set_num_threads(threads)
    return out


@part("profile")
def profile(work: Path, manifest: Path, batch: int) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from wsss_ray.config import resolve_label_job
    from wsss_ray.pipeline import CamStage
    from wsss_ray.stages import decode_stage

    config = resolve_label_job({"input": str(manifest), "model": MODEL, "pretrained": str(work / "weights.pt"),
                                "labelset": "toyworld", "num_gpus": float(CUDA)})
    items = [json.loads(line) for line in manifest.read_text().splitlines()][:batch]
    rows = {"id": np.array([i["id"] for i in items]), "image": np.array([str(work / i["image"]) for i in items]),
            "labels": [np.array(i["labels"]) for i in items], "status": np.array(["ok"] * len(items), object),
            "error": np.array([None] * len(items), object)}
    decoded = decode_stage(rows, max_pixels=10**8)
    stage = CamStage(config)
    stage(dict(decoded))  # warm-up
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if CUDA else [])
    start = time.perf_counter()
    with torch_profile(activities=activities) as prof:
        stage(dict(decoded))
        sync()
    wall = time.perf_counter() - start
    events = prof.key_averages()
    device_us = sum(getattr(e, "self_device_time_total", 0) for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    return {"batch": batch, "precision": stage.labeler.precision, "wall_ms_per_image": round(1000 * wall / batch, 2),
            "device_ms_per_image": round(device_us / 1000 / batch, 2),
            "host_top_self_ms_per_image": {e.key: round(e.self_cpu_time_total / 1000 / batch, 3) for e in top}}


@part("host_steps")
def host_steps(work: Path, items: list[dict], n: int) -> dict:
    """What is left on the host per image in the GPU layout, timed on this machine's CPU: the
    decode (CPU tasks), the image's upload, the copy back and its unpacking (``post.to_host``),
    and the PNGs (CPU tasks)."""
    from wsss_ray import post
    from wsss_ray.masks import encode_png
    from wsss_ray.store import decode_within, read_bytes

    images, labels = load(work, items, n)
    lab = labeller(work)
    lab.post_on_device = True
    paths = [str(work / i["image"]) for i in items[:n]]
    decode_s, _ = timed(lambda: [decode_within(read_bytes(p), 10**8) for p in paths], 1)
    upload_s, _ = timed(lambda: [torch.from_numpy(np.require(im, requirements=["C", "W"])).to(DEVICE)
                                 for im in images], 1)
    cams_on_device = lab.cam_tensors(images, labels)
    done = [post.label_image(torch.from_numpy(np.require(im, requirements=["C", "W"])).to(DEVICE), c,
                             lab.class_ids(lb), lab.post, lab.crf) for im, c, lb in zip(images, cams_on_device, labels)]
    sync()
    back_s, made = timed(lambda: post.to_host(done, lab.post), 3)
    png_s, _ = timed(lambda: [(encode_png(m), encode_png(c, palette=False)) for m, c, *_ in made], 1)
    return {"images": n, "ms_per_image": {"decode (CPU task)": round(1000 * decode_s / n, 2),
                                          "upload of the uint8 image": round(1000 * upload_s / n, 3),
                                          "copy back and unpacking (post.to_host)": round(1000 * back_s / n, 3),
                                          "mask and confidence PNGs (CPU task)": round(1000 * png_s / n, 2)}}


class GpuSampler:
    """nvidia-smi's utilization.gpu every 200 ms, with wall-clock times, while running."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self.proc = None

    def __enter__(self):
        if CUDA:
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-lms", "200", "-i", "0"], stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            if line.strip().isdigit():
                self.samples.append((time.time(), float(line)))

    def __exit__(self, *exc):
        if self.proc:
            self.proc.terminate()

    def busy(self, start: float, end: float) -> float | None:
        inside = [u for t, u in self.samples if start <= t <= end]
        return round(float(np.mean(inside)) / 100, 3) if inside else None


def steady_state(output: Path) -> tuple[float, float, float]:
    """(rows/s, start, end) from the first output file written to the last (files' mtimes)."""
    import pyarrow.parquet as pq

    files = sorted((p.stat().st_mtime, pq.read_metadata(p).num_rows) for p in output.rglob("*.parquet"))
    if len(files) < 2:
        return float("nan"), 0.0, 0.0
    rows = sum(n for _, n in files[1:])
    return rows / (files[-1][0] - files[0][0]), files[0][0], files[-1][0]


@part("job")
def job(work: Path, manifest: Path) -> dict:
    import ray

    from wsss_ray.config import resolve_label_job
    from wsss_ray.pipeline import run

    output = work / "job-out"
    config = resolve_label_job({"input": str(manifest), "output": str(output), "model": MODEL,
                                "pretrained": str(work / "weights.pt"), "labelset": "toyworld",
                                "num_gpus": float(CUDA), "rows_per_file": 256})  # files: the steady state's clock
    ray.init(num_cpus=os.cpu_count(), num_gpus=int(CUDA), include_dashboard=False, log_to_driver=False)
    try:
        with GpuSampler() as gpu:
            start = time.perf_counter()
            summary = run(config, progress_interval=30)
            seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    rate, t0, t1 = steady_state(output)
    return {"rows": summary["rows"], "ok": summary["ok"], "errors": summary["errors"], "miou": summary.get("miou"),
            "seconds": round(seconds, 1), "rows_per_s": round(summary["rows"] / seconds, 2),
            "steady_rows_per_s": round(rate, 2), "steady_seconds": round(t1 - t0, 1),
            "gpu_busy_steady": gpu.busy(t0, t1), "batch_size": config.batch_size}


@part("reference")
def reference(work: Path, items: list[dict]) -> dict:
    from reference_flow import agreement, job_masks, reference_flow

    timing = reference_flow(work, items, "toyworld", os.cpu_count(), os.cpu_count(), work / "ref", DEVICE)
    out = {"images": len(items), "seconds": round(timing["seconds"], 1), "loading": round(timing["loading"], 1),
           "images_per_s": round(len(items) / timing["seconds"], 3), "cpu_cores": os.cpu_count()}
    ran = RESULTS.get("job", {})
    if "steady_rows_per_s" in ran:
        out["job_steady_vs_reference"] = round(ran["steady_rows_per_s"] / out["images_per_s"], 2)
        out["job_whole_run_vs_reference"] = round(ran["rows_per_s"] / out["images_per_s"], 2)
        job_masks(work / "job-out", work / "job-masks")
        out["masks_equal_to_reference_median"] = round(float(np.median(agreement(work / "ref", work / "job-masks",
                                                                                 items))), 4)
    return out


@part("train_gpu")
def train_gpu(work: Path) -> dict:
    import ray

    from wsss_ray.config import TrainConfig
    from wsss_ray.toyworld import SPLIT_SEEDS, generate
    from wsss_ray.train.trainer import run

    val = generate(work / "val", 20, seed=SPLIT_SEEDS["val"])
    ray.init(num_cpus=os.cpu_count(), num_gpus=int(CUDA), include_dashboard=False, log_to_driver=False)
    try:
        summary = run(TrainConfig(input=str(work / "job-out"), val=str(val), output=str(work / "train"), epochs=2,
                                  num_workers=1, use_gpu=CUDA, crop=128, batch_size=8))
    finally:
        ray.shutdown()
    return {k: summary[k] for k in ("epochs", "best_miou", "samples_per_s", "seconds")}


@part("learn_prompts_gpu")
def learn_prompts_gpu(work: Path) -> dict:
    import ray

    from wsss_ray.config import LearnPromptsConfig
    from wsss_ray.train.prompts import run

    ray.init(num_cpus=os.cpu_count(), num_gpus=int(CUDA), include_dashboard=False, log_to_driver=False)
    try:
        summary = run(LearnPromptsConfig(output=str(work / "prompts"), use_gpu=CUDA, epochs=20))
    finally:
        ray.shutdown()
    return {k: summary[k] for k in ("epochs", "pairs", "loss", "background_seconds", "seconds")}


PARTS = ("precision_probe", "cams", "crf", "profile", "host_steps", "job", "reference", "train_gpu",
         "learn_prompts_gpu")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT", "outputs/gpu"))
    parser.add_argument("--quick", action="store_true", help="a few images and batch sizes: checks every part")
    parser.add_argument("--images", type=int, default=2048, help="images of the job and the reference flow")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-"))
    n = 8 if args.quick else args.images
    batches = [1, 2] if args.quick else [1, 2, 4, 8, 16, 32, 64]
    repeats = 1 if args.quick else 3
    RESULTS.update(date=time.strftime("%Y-%m-%d"), device=torch.cuda.get_device_name() if CUDA else "cpu",
                   cpu_count=os.cpu_count(), torch=torch.__version__, python=sys.version.split()[0],
                   commit=subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                         text=True).stdout.strip())
    print(json.dumps(RESULTS), flush=True)
    items = prepare(work, max(n, max(batches)))
    manifest = work / "manifest.jsonl"
    calls = {"precision_probe": lambda: precision_probe(work),
             "cams": lambda: cams(work, items, batches, repeats),
             "crf": lambda: crf(work, items, 4 if args.quick else 16),
             "profile": lambda: profile(work, manifest, 2 if args.quick else 16),
             "host_steps": lambda: host_steps(work, items, 4 if args.quick else 16),
             "job": lambda: job(work, manifest),
             "reference": lambda: reference(work, items[:n]),
             "train_gpu": lambda: train_gpu(work),
             "learn_prompts_gpu": lambda: learn_prompts_gpu(work)}
    for name in args.parts:
        calls[name]()
        (out / "gpu.json").write_text(json.dumps(RESULTS, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
