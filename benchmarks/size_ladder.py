"""Any photo size through the labelling job: seconds per image and CAM-actor memory, 320x213 to 48 megapixels.

The photos are MSRC photos of ../shared/data/real-sample, upscaled (bicubic) to each
size of the ladder and saved as JPEG (quality 90). Each size runs through the job
(``wsss_ray.pipeline.run``, a local Ray with 2 CPUs, a fresh one per size) with two
models: the bundled toyclip with its own settings (toyworld labels), and a randomly
initialised ViT-B/16 with QuickGELU saved to a local file as
``benchmarks/reference_flow.py`` makes it (CLIP-ES's defaults, the MSRC labels).

The job's stages are timed where they run: the CAM actor times its batches and keeps
its peak resident memory (``ru_maxrss``; the model loaded is the floor); the decode and
CRF tasks time theirs. Seconds per image = (decode + CAM + CRF stage time) / images,
minus what decoding and PNG-encoding those images take (measured on the same files in
this process), as the goal leaves decode and PNG encode aside.

With ``--baseline TREE`` (a checkout of an earlier commit, e.g. ``git worktree add
/tmp/wsss-before 0f4fb15``), the same jobs also run on that code, one process each
with a time limit, and the masks are compared pixel for pixel with this code's.

    .venv/bin/python benchmarks/size_ladder.py [--images 4] [--models toyclip vit-b-16]
        [--baseline /tmp/wsss-before --baseline-sizes 320x213 500x375 1024x768 1600x1200]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "real-sample" / "msrc"
SIZES = ["320x213", "500x375", "1024x768", "1600x1200", "4000x3000", "8000x6000"]
VIT = "ViT-B-16-quickgelu"


def make_photos(work: Path, size: str, n: int, toy_labels: bool) -> Path:
    """`n` MSRC photos upscaled to `size` as JPEGs, and their manifest; returns the manifest."""
    from PIL import Image

    folder = work / f"photos-{size}"
    manifest = folder / ("toy.jsonl" if toy_labels else "msrc.jsonl")
    folder.mkdir(exist_ok=True)
    w, h = map(int, size.split("x"))
    lines = []
    for item in [json.loads(line) for line in (DATA / "manifest.jsonl").read_text().splitlines()][:n]:
        path = folder / f"{item['id']}.jpg"
        if not path.exists():
            Image.open(DATA / item["image"]).convert("RGB").resize((w, h), Image.BICUBIC).save(path, quality=90)
        labels = ["cow", "boat"] if toy_labels else item["labels"]
        lines.append(json.dumps({"id": item["id"], "image": str(path), "labels": labels}) + "\n")
    manifest.write_text("".join(lines))
    return manifest


def model_settings(model: str, work: Path) -> dict:
    if model == "toyclip":
        return {"model": "toyclip", "labelset": "toyworld"}
    weights = work / "vit-b-16.pt"
    if not weights.exists():
        import open_clip
        import torch

        torch.manual_seed(0)
        torch.save(open_clip.create_model(VIT).state_dict(), weights)
    return {"model": VIT, "pretrained": str(weights), "labelset": str(DATA / "labelset.yaml")}


def timed(log: Path, stage: str, fn):
    """`fn` (a stage function), appending (stage, images, seconds) of each batch to `log`."""
    def run(batch, *args, **kwargs):
        import torch  # noqa: F401 - a worker's first imports are not per-image work

        import wsss_ray.crf  # noqa: F401
        start = time.perf_counter()
        out = fn(batch, *args, **kwargs)
        with open(log, "a") as f:
            f.write(json.dumps({"stage": stage, "images": len(batch["id"]), "s": time.perf_counter() - start}) + "\n")
        return out
    return run


def timed_cam_stage(log: Path):
    from wsss_ray.pipeline import CamStage

    class TimedCamStage(CamStage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            with open(log, "a") as f:
                f.write(json.dumps({"stage": "loaded", "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})
                        + "\n")

        def __call__(self, batch):
            start = time.perf_counter()
            out = super().__call__(batch)
            with open(log, "a") as f:
                f.write(json.dumps({"stage": "cam", "images": len(batch["id"]), "s": time.perf_counter() - start,
                                    "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}) + "\n")
            return out

    return TimedCamStage


def run_job(manifest: Path, output: Path, settings: dict, log: Path) -> dict:
    """The job on `manifest`, its stages timed into `log`, on a fresh local Ray."""
    import ray

    import wsss_ray.pipeline as pipeline
    from wsss_ray.config import resolve_label_job

    config = resolve_label_job({**settings, "input": str(manifest), "output": str(output), "batch_size": 4})
    decode, crf = pipeline.decode_stage, pipeline.crf_stage
    pipeline.decode_stage, pipeline.crf_stage = timed(log, "decode", decode), timed(log, "crf", crf)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        start = time.time()
        summary = pipeline.run(config, cam_stage=timed_cam_stage(log), progress_interval=60)
        summary["wall"] = time.time() - start
    finally:
        ray.shutdown()
        pipeline.decode_stage, pipeline.crf_stage = decode, crf
    return summary


def codec_seconds(manifest: Path, output: Path, max_side: int) -> float:
    """Per image: decoding it as the job does (shrunk for the CAMs, whole again for the mask when it was
    shrunk) and PNG-encoding its mask and confidence, as measured here on the same files."""
    from wsss_ray.masks import decode_png, encode_png
    from wsss_ray.store import read_output
    from wsss_ray.store import decode_within

    rows = {r["id"]: r for r in read_output(str(output)).to_pylist()}
    total, n = 0.0, 0
    for line in manifest.read_text().splitlines():
        item = json.loads(line)
        data = Path(item["image"]).read_bytes()
        mask, conf = decode_png(rows[item["id"]]["mask"]), decode_png(rows[item["id"]]["confidence"])
        start = time.perf_counter()
        pixels, full = decode_within(data, max_pixels=50_000_000, max_side=max_side)
        if pixels.shape[:2] != full:
            decode_within(data)
        encode_png(mask), encode_png(conf, palette=False)
        total += time.perf_counter() - start
        n += 1
    return total / n


def summarise(log: Path, codec: float) -> dict:
    records = [json.loads(line) for line in log.read_text().splitlines()]
    images = sum(r["images"] for r in records if r["stage"] == "cam")
    stage = {s: sum(r["s"] for r in records if r["stage"] == s) / images for s in ("decode", "cam", "crf")}
    loaded = max(r["rss_kb"] for r in records if r["stage"] == "loaded") / 1024
    peak = max(r["rss_kb"] for r in records if "rss_kb" in r) / 1024
    return {**{f"{k}_s": round(v, 3) for k, v in stage.items()}, "codec_s": round(codec, 3),
            "per_image_s": round(sum(stage.values()) - codec, 3), "actor_loaded_mb": round(loaded),
            "actor_peak_mb": round(peak)}


def masks_of(output: Path) -> dict[str, np.ndarray]:
    from wsss_ray.masks import decode_png
    from wsss_ray.store import read_output

    return {r["id"]: decode_png(r["mask"]) for r in read_output(str(output)).to_pylist() if r["status"] == "ok"}


def baseline(tree: Path, manifest: Path, output: Path, settings: dict, timeout: float) -> dict:
    """The job of the checkout `tree` on the same photos, in a process of its own; its wall time, or why it failed."""
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.time()
    try:
        proc = subprocess.run([sys.executable, str(tree / "jobs" / "pseudolabel.py"), "--input", str(manifest),
                               "--output", str(output), "--batch-size", "4", *flags], env=env, capture_output=True,
                              text=True, timeout=timeout, cwd=output.parent)
    except subprocess.TimeoutExpired:
        return {"failed": f"not done after {timeout:.0f} s"}
    if proc.returncode:
        last = [l for l in proc.stderr.splitlines() if "Error" in l][-1:] or proc.stderr.splitlines()[-1:]
        return {"failed": f"exit {proc.returncode} after {time.time() - start:.0f} s: {last[0][:160] if last else ''}"}
    return {"wall": round(time.time() - start, 1)}


def agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[float, float]:
    """Median and lowest per-image share of equal pixels over the ids both have."""
    shares = [float((a[k] == b[k]).mean()) for k in sorted(set(a) & set(b))]
    return float(np.median(shares)), float(min(shares))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=4, help="photos per size")
    ap.add_argument("--sizes", nargs="+", default=SIZES)
    ap.add_argument("--models", nargs="+", default=["toyclip", "vit-b-16"])
    ap.add_argument("--baseline", type=Path, help="a checkout of an earlier commit to compare with")
    ap.add_argument("--baseline-sizes", nargs="+", default=SIZES[:3])
    ap.add_argument("--baseline-timeout", type=float, default=600)
    ap.add_argument("--work", type=Path, help="keep the photos and outputs here (default: a temporary folder)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="size-ladder-"))
    work.mkdir(parents=True, exist_ok=True)
    from wsss_ray.budget import decode_side
    from wsss_ray.config import resolve_label_job

    rows = []
    for model in args.models:
        settings = model_settings(model, work)
        config = resolve_label_job(settings)
        side = decode_side(config.method_config, config.post.crf)
        for size in args.sizes:
            manifest = make_photos(work, size, args.images, toy_labels=model == "toyclip")
            output, log = work / f"out-{model}-{size}", work / f"log-{model}-{size}.jsonl"
            for stale in (output, log):
                subprocess.run(["rm", "-rf", str(stale)], check=True)
            summary = run_job(manifest, output, settings, log)
            row = {"model": model, "size": size, "ok": summary["ok"], "errors": summary["errors"],
                   "job_wall_s": round(summary["wall"], 1),
                   **summarise(log, codec_seconds(manifest, output, side))}
            if args.baseline and size in args.baseline_sizes:
                before = work / f"before-{model}-{size}"
                subprocess.run(["rm", "-rf", str(before)], check=True)
                row["before"] = baseline(args.baseline, manifest, before, settings, args.baseline_timeout)
                if "wall" in row["before"]:
                    row["before"]["masks_agree_median"], row["before"]["masks_agree_lowest"] = (
                        round(x, 4) for x in agreement(masks_of(output), masks_of(before)))
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("| model | size | ok | s/image | decode+encode s | CAM s | CRF s | actor peak MB (loaded) | before |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['size']} | {r['ok']}/{r['ok'] + r['errors']} | {r['per_image_s']} | "
              f"{r['codec_s']} | {r['cam_s']} | {r['crf_s']} | {r['actor_peak_mb']} ({r['actor_loaded_mb']}) | "
              f"{json.dumps(r.get('before', ''))} |")


if __name__ == "__main__":
    main()
