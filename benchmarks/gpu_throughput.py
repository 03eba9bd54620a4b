"""The GPU paths on one lent GPU: CAM images/s at VOC size, the labelling job with a GPU actor,
Ray Train on the GPU (NCCL), and SemPLeS prompt learning on the GPU.

    python benchmarks/gpu_throughput.py --out OUT_DIR [--quick]

- CAM images/s of CLIP-ES (CAA on, one scale, the ViT-B/16 defaults) with a randomly
  initialised ViT-B/16 at 500x375 (VOC size; 384x512 model input), two classes per
  image, batch sizes 1..64, fp32, fp16 and bf16 autocast; the half-precision CAMs are
  compared with the fp32 ones. GPU work alone (inputs already on the GPU, CAMs at grid
  size) and the method's whole ``cams`` call (resizing, upsampling to the image, copy back).
- SemPLeS and FreeSeg CAM images/s at batch 16 (random prompts of ViT-B/16 width).
- Both dense-CRF backends at 500x375: the torch backend on the GPU (default coarse grid
  and full resolution) and pydensecrf on one CPU core, and the CPU cores one GPU's CAM
  output would need with each.
- The labelling job (Ray Data, one CAM actor with ``num_gpus=1``) on toy images upscaled
  to 500x375, rows/s, with the CRF off and with the torch CRF in the GPU actor.
- Ray Train: two epochs of the segmentation net with ``use_gpu`` (NCCL backend).
- SemPLeS prompt learning with ``use_gpu`` on the toyclip.

Each part prints one JSON line and is written to OUT_DIR/gpu.json; a part that fails
records its error and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS: dict = {}
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"   # a CPU dry run checks the script before device time is spent
HALF = torch.float16 if CUDA else torch.bfloat16


def part(name: str):
    def wrap(fn):
        def run(*a, **k):
            start = time.time()
            try:
                RESULTS[name] = fn(*a, **k)
            except Exception as e:  # noqa: BLE001 - record and go on to the next part
                RESULTS[name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
            RESULTS[name]["part_seconds"] = round(time.time() - start, 1)
            print(json.dumps({name: RESULTS[name]}), flush=True)
        return run
    return wrap


def voc_images(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[list[int]]]:
    from PIL import Image

    from wsss_ray.toyworld import render

    images, ids = [], []
    for i in range(n):
        s = render(seed + i)
        images.append(np.asarray(Image.fromarray(s.image).resize((500, 375), Image.BICUBIC)))
        ids.append([0, 1])
    return images, ids


def _sync():
    if CUDA:
        torch.cuda.synchronize()


@part("clip_es_cams")
def clip_es_cams(batches: list[int], repeats: int) -> dict:
    from wsss_ray.cam.clip_es import ClipES
    from wsss_ray.cam.gradcam import to_model_input
    from wsss_ray.clip import load_clip
    from wsss_ray.config import ClipESConfig
    from wsss_ray.labelset import load_labelset

    torch.manual_seed(0)
    clip = load_clip("ViT-B-16", None, DEVICE)
    method = ClipES(ClipESConfig(), clip, load_labelset("voc"))
    images, ids = voc_images(max(batches))
    x_all = torch.stack([to_model_input(im, (384, 512), clip.mean, clip.std) for im in images]).to(DEVICE)
    out = {"gpu": torch.cuda.get_device_name() if CUDA else "cpu", "torch": torch.__version__, "input": [384, 512],
           "classes_per_image": 2, "rows": []}
    ref = None
    halves = {"fp16": torch.float16, "bf16": torch.bfloat16}
    for dtype in ("fp32", "fp16", "bf16") if CUDA else ("fp32", "bf16"):
        for b in batches:
            x, i = x_all[:b], ids[:b]
            def grid():
                with torch.autocast(DEVICE, dtype=halves.get(dtype, HALF), enabled=dtype in halves):
                    return method._grid_cams(x, i)
            grid()
            _sync()
            t = time.perf_counter()
            for _ in range(repeats):
                cams = grid()
            _sync()
            gpu_s = (time.perf_counter() - t) / repeats
            def whole():
                with torch.autocast(DEVICE, dtype=halves.get(dtype, HALF), enabled=dtype in halves):
                    return method.cams(images[:b], i)
            whole()
            _sync()
            t = time.perf_counter()
            for _ in range(max(1, repeats // 2)):
                full = whole()
            _sync()
            whole_s = (time.perf_counter() - t) / max(1, repeats // 2)
            row = {"dtype": dtype, "batch": b, "gpu_images_per_s": round(b / gpu_s, 1),
                   "cams_images_per_s": round(b / whole_s, 1),
                   "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if CUDA else None}
            if dtype == "fp32" and b == max(batches):
                ref = [c.float().cpu() for c in cams]
                ref_full = full
            if dtype in halves and b == max(batches) and ref is not None:
                row["max_abs_diff_vs_fp32"] = round(max(float((a.float().cpu() - r).abs().max())
                                                        for a, r in zip(cams, ref)), 4)
                agree = [float((f.argmax(0) == r.argmax(0)).mean()) for f, r in zip(full, ref_full)]
                row["argmax_agreement_vs_fp32"] = round(float(np.median(agree)), 4)
            out["rows"].append(row)
            if CUDA:
                torch.cuda.reset_peak_memory_stats()
            print(json.dumps(row), flush=True)
    return out


@part("methods_cams")
def methods_cams(batch: int, repeats: int) -> dict:
    from wsss_ray.cam.clip_es import ClipES
    from wsss_ray.cam.freeseg import FreeSeg
    from wsss_ray.cam.semples import PROMPTS_FILE, LearnedPrompts, SemPLeS
    from wsss_ray.clip import load_clip
    from wsss_ray.config import ClipESConfig, FreeSegConfig, SemplesConfig
    from wsss_ray.labelset import load_labelset

    torch.manual_seed(0)
    clip = load_clip("ViT-B-16", None, DEVICE)
    voc = load_labelset("voc")
    folder = Path(tempfile.mkdtemp())
    (folder / PROMPTS_FILE).write_bytes(LearnedPrompts(torch.rand(len(voc), 30, 512), voc.names, "ViT-B-16").to_bytes())
    images, ids = voc_images(batch)
    out = {}
    for name, method in (("clip-es", ClipES(ClipESConfig(), clip, voc)),
                         ("semples", SemPLeS(SemplesConfig(prompts=str(folder)), clip, voc)),
                         ("freeseg", FreeSeg(FreeSegConfig(), clip, voc))):
        method.cams(images, ids)
        _sync()
        t = time.perf_counter()
        for _ in range(repeats):
            method.cams(images, ids)
        _sync()
        out[name] = round(batch * repeats / (time.perf_counter() - t), 1)
    return {"batch": batch, "fp32_cams_images_per_s": out}


@part("crf_backends")
def crf_backends(n: int) -> dict:
    from wsss_ray.config import CrfConfig
    from wsss_ray.crf import dense_crf

    images, _ = voc_images(n, seed=100)
    rng = np.random.default_rng(0)
    small = torch.from_numpy(rng.random((n, 3, 24, 32)).astype(np.float32))
    probs = torch.nn.functional.interpolate(small, size=(375, 500), mode="bilinear").numpy()
    probs /= probs.sum(1, keepdims=True)
    cams_per_s = max((r["gpu_images_per_s"] for r in RESULTS.get("clip_es_cams", {}).get("rows", [])
                      if r.get("dtype") == "fp32"), default=None)
    out = {"cams_images_per_s_fp32": cams_per_s, "rows": []}
    torch.set_num_threads(1)
    for name, config, device in (("pydensecrf, 1 CPU core", CrfConfig(backend="pydensecrf"), "cpu"),
                                 ("torch, 1 CPU core", CrfConfig(), "cpu"),
                                 ("torch on the GPU", CrfConfig(), DEVICE),
                                 ("torch on the GPU, full resolution", CrfConfig(downsample=1), DEVICE)):
        dense_crf(images[0], probs[0], config, device)
        _sync()
        t = time.perf_counter()
        labels = [dense_crf(im, p, config, device).argmax(0) for im, p in zip(images, probs)]
        _sync()
        seconds = (time.perf_counter() - t) / n
        row = {"backend": name, "s_per_image": round(seconds, 4)}
        if cams_per_s and device == "cpu":
            row["cpu_cores_per_gpu"] = round(cams_per_s * seconds, 1)
        if name.startswith("pydensecrf"):
            ref = labels
        else:
            row["pixels_as_pydensecrf"] = round(float(np.mean([(a == b).mean() for a, b in zip(labels, ref)])), 4)
        out["rows"].append(row)
    torch.set_num_threads(os.cpu_count())
    return out


@part("labelling_job")
def labelling_job(n: int, work: Path) -> dict:
    import ray
    from PIL import Image

    from wsss_ray.clip import load_clip
    from wsss_ray.toyworld.toyclip import save_local_dir
    from wsss_ray.config import resolve_label_job
    from wsss_ray.pipeline import run
    from wsss_ray.toyworld import SPLIT_SEEDS, generate

    manifest = generate(work / "toy", n, seed=SPLIT_SEEDS["test"])
    for p in (work / "toy" / "images").glob("*.png"):
        Image.open(p).resize((500, 375), Image.BICUBIC).save(p)
    for p in (work / "toy" / "masks").glob("*.png"):
        Image.open(p).resize((500, 375), Image.NEAREST).save(p)
    torch.manual_seed(0)
    import open_clip

    model_dir = save_local_dir(load_clip("ViT-B-16").model, work / "vitb16", open_clip.get_model_config("ViT-B-16"),
                               half=False)
    out = {}
    ray.init(num_cpus=os.cpu_count(), num_gpus=int(CUDA), include_dashboard=False, log_to_driver=False)
    try:
        for crf, label in ((0, "gpu_actor"), (10, "gpu_actor_with_crf")):
            config = resolve_label_job({"input": str(manifest), "output": str(work / f"out-{label}"),
                                        "model": f"local-dir:{model_dir}", "labelset": "toyworld",
                                        "num_gpus": float(CUDA), "batch_size": 16, "post": {"crf": {"iters": crf}}})
            summary = run(config, progress_interval=30)
            out[label] = {k: summary.get(k) for k in ("rows", "ok", "errors", "seconds", "rows_per_s")}
            out[label]["actors_gpus"] = ray.cluster_resources().get("GPU")
    finally:
        ray.shutdown()
    return out


@part("train_gpu")
def train_gpu(work: Path) -> dict:
    import ray

    from wsss_ray.config import TrainConfig
    from wsss_ray.toyworld import SPLIT_SEEDS, generate
    from wsss_ray.train.trainer import run

    labels = work / "out-gpu_actor"
    val = generate(work / "val", 20, seed=SPLIT_SEEDS["val"])
    ray.init(num_cpus=os.cpu_count(), num_gpus=int(CUDA), include_dashboard=False, log_to_driver=False)
    try:
        summary = run(TrainConfig(input=str(labels), val=str(val), output=str(work / "train"), epochs=2,
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT", "outputs/gpu"))
    parser.add_argument("--quick", action="store_true", help="fewer batch sizes and repeats")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-"))
    batches = [1, 2] if args.quick else [1, 2, 4, 8, 16, 32, 64]
    repeats = 1 if args.quick else 5
    RESULTS["date"] = time.strftime("%Y-%m-%d")
    clip_es_cams(batches, repeats)
    methods_cams(2 if args.quick else 16, repeats)
    crf_backends(2 if args.quick else 16)
    labelling_job(8 if args.quick else 256, work)
    train_gpu(work)
    learn_prompts_gpu(work)
    (out / "gpu.json").write_text(json.dumps(RESULTS, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
