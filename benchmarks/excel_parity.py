"""``--method excel`` against the ExCEL authors' training-free code, on the same random weights.

The authors' code (the public repository zwyang6/ExCEL) is the user's to fetch; nothing of
it enters this repository. Both sides label the photos of ../shared/data/real-sample (41
MSRC + 3 VOC) with one randomly initialised ViT-B/16 (QuickGELU, the architecture of
OpenAI's CLIP; no weights can be downloaded here), saved once in OpenAI's state-dict layout
and loaded by both, on the CPU, in float32:

- theirs: ``tools/infer_lam.py``'s training-free path as its ``build_validation`` runs it
  (their ``clip`` package, ``clip_feature_surgery``, ``refine_cams_with_aff`` with box
  threshold 0.79, ``refine_cams_with_bkg_weclip`` with their ``PAR``), called function by
  function in a subprocess with their checkout on ``sys.path``; ``.cuda()`` is made a no-op
  there and OpenCV comes from a scratch folder (``build/excel-reference``);
- ours: the labeller with ``--method excel`` set to the authors' path (``excel.par_iters`` 20,
  PAR at full size, ``post.bg_power`` 1, no CRF), so its mask is the argmax theirs takes.

Both encode the project's class texts (the labelset's concatenated synonyms) and background
words, so the comparison is of the algorithm, not of the wording. With ``--descriptors``
(their VOC JSON), the sentences are handed to both sides as one JSON that gives each class of
the labelset a share of them, so both build the attribute bank from the same sentences with
these random weights (the bank shipped in their repository fits OpenAI's weights only).

Per class: the Pearson r of the grid maps before the affinity and after it; per image: the
share of pixels whose labels are equal. Prints a table and writes ``--out`` (JSON).

    .venv/bin/python benchmarks/excel_parity.py --reference DIR [--descriptors DIR/attributes_text/descriptors_pascal_voc_gpt4.0_cluster_a_photo_of4.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "real-sample"
MODEL = "ViT-B-16-quickgelu"
EXTRA = ROOT / "build" / "excel-reference" / "site"
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def prepared(work: Path) -> Path:
    """`work` with OpenCV for their side and the random weights (saved once); the weights' path."""
    import open_clip
    import torch

    ensure_extra()
    work.mkdir(parents=True, exist_ok=True)
    weights = work / "weights.pt"
    if not weights.exists():
        torch.manual_seed(0)
        torch.save(open_clip.create_model(MODEL).state_dict(), weights)
    return weights


def items(data: Path, subsets: tuple[str, ...] = ("msrc", "voc"), size: tuple[int, int] | None = None,
          work: Path | None = None) -> list[dict]:
    """The sample's photos: (subset, id, image path, labels) for msrc then voc; with `size`
    (width, height), copies resized to it (bicubic) under `work`."""
    from PIL import Image

    out = []
    for subset in subsets:
        for line in (data / subset / "manifest.jsonl").read_text().splitlines():
            item = json.loads(line)
            image = str(data / subset / item["image"])
            if size:
                image = str(work / f"{item['id']}-{size[0]}x{size[1]}.png")
                Image.open(data / subset / item["image"]).convert("RGB").resize(size, Image.BICUBIC).save(image)
            out.append({"subset": subset, "id": item["id"], "image": image, "labels": item["labels"],
                        "labelset": str(data / subset / "labelset.yaml")})
    return out


def shared_descriptors(path: Path, labelset, out: Path) -> Path:
    """Their sentences, dealt round-robin over `labelset`'s classes, as one JSON both sides read."""
    sentences = [s for group in json.loads(path.read_text()).values() for s in group]
    names = [c.name for c in labelset.classes]
    out.write_text(json.dumps({n: sentences[i::len(names)] for i, n in enumerate(names)}))
    return out


# ----------------------------------------------------------------------------------------
# Their side (run in a subprocess: `python excel_parity.py --their-side ...`)

def their_side(reference: str, weights: str, job: str, out: str) -> None:
    """Run the authors' training-free path on the job's photos and save what it computes."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    sys.path.insert(0, reference)
    torch.Tensor.cuda = lambda self, *a, **k: self          # their code assumes CUDA
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.set_num_threads(1)
    import clip  # theirs
    from clip.build_model import build_model
    from utils.affutils import refine_cams_with_aff, refine_cams_with_bkg_weclip
    from utils.PAR import PAR

    spec = json.loads(Path(job).read_text())
    model = build_model("ExCEL_ViT-B/16", torch.load(weights, map_location="cpu")).float().eval()
    model.visual.reload_self_attn(layers=6, feat_size=20, mode="train")
    clip.load = lambda *a, **k: (model, None)                # their bank builder loads "ViT-B/16"
    import sklearn.cluster

    pinned = sklearn.cluster.KMeans                          # their pinned scikit-learn 1.0.2 starts k-means 10 times
    sklearn.cluster.KMeans = lambda *a, **k: pinned(*a, **{"n_init": 10, **k})
    par = PAR(num_iter=20, dilations=[1, 2, 4, 8, 12, 24])
    results = {}
    for labelset_key, group in spec["groups"].items():
        texts = group["classes"] + group["background"]
        with torch.no_grad():
            text = clip.encode_text_with_prompt_ensemble(model, texts, "cpu", prompt_templates=group["templates"])
            k = len(group["classes"])
            if spec.get("descriptors"):
                from model.load_attr import attr_aggregate

                rows, _ = attr_aggregate(text, "parity" + labelset_key, k, 112, group["descriptors"])
                text = rows.permute(1, 0)
        for item in group["items"]:
            start = time.perf_counter()
            image = np.asarray(Image.open(item["image"]).convert("RGB")).astype(np.float32)
            mean, std = (np.array(v, np.float32) * 255 for v in IMAGENET)
            x = torch.from_numpy((image - mean) / std).permute(2, 0, 1)[None]
            size = x.shape[-2:]
            with torch.no_grad():
                x = F.interpolate(x, size=[320, 320], mode="bilinear", align_corners=False)
                feats, attn, _ = clip.generate_clip_fts(x, model, return_weights=True)
                raw = clip.clip_feature_surgery(feats, text)[:, 1:, :k]
                label = torch.zeros(k)
                label[item["class_ids"]] = 1
                refined, cls = refine_cams_with_aff(raw[0], attn[:, 0], label, size=(320, 320), caa_thre=0.79)
                maps = time.perf_counter()
                mask, _ = refine_cams_with_bkg_weclip(refined, x[0], cls, par, size)
            seconds = [maps - start, time.perf_counter() - start]
            results[item["id"]] = {"raw": raw[0][:, cls].T.reshape(len(cls), 20, 20).numpy(), "seconds": seconds,
                                   "refined": torch.stack(refined).numpy(), "mask": mask[0].numpy().astype(np.uint8)}
    np.savez_compressed(out, **{f"{i}/{k}": v for i, r in results.items() for k, v in r.items()})


# ----------------------------------------------------------------------------------------
# Our side and the comparison

def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def our_side(weights: Path, spec: dict, par_max_side: int | None) -> dict:
    import torch
    from PIL import Image

    from wsss_ray.labeler import Labeler

    torch.set_num_threads(1)
    results = {}
    for group in spec["groups"].values():
        settings = {"par_iters": 20, "par_max_side": par_max_side,  # the authors' path: PAR, no CRF
                    "descriptors": group.get("descriptors") if spec["descriptors"] else None}
        labeler = Labeler.from_spec(MODEL, group["labelset"], method="excel", settings=settings,
                                    post={"bg_power": 1, "crf": {"iters": 0}}, pretrained=str(weights),
                                    precision="fp32")
        method = labeler.method
        for item in group["items"]:
            image = np.asarray(Image.open(item["image"]).convert("RGB"))
            ids = sorted(item["class_ids"])
            pixels = torch.from_numpy(image.copy())
            x = method.model_input(pixels, method.input_size(*image.shape[:2], 1.0))[None]
            grid = method.grid_maps(x, [ids])
            labels = [labeler.labelset.classes[i].name for i in ids]
            result = labeler.label([image], [labels])[0]
            results[item["id"]] = {"raw": grid.raw[0].numpy(), "refined": grid.refined[0].numpy(), "mask": result.mask}
    return results


def compare(theirs: dict, ours: dict) -> dict:
    rows = {"raw_r": [], "refined_r": [], "masks_equal": [], "per_image": {}}
    for image_id, mine in ours.items():
        raw = [pearson(mine["raw"][k], theirs[f"{image_id}/raw"][k]) for k in range(len(mine["raw"]))]
        refined = [pearson(mine["refined"][k], theirs[f"{image_id}/refined"][k]) for k in range(len(mine["refined"]))]
        equal = float((mine["mask"] == theirs[f"{image_id}/mask"]).mean())
        rows["raw_r"] += raw
        rows["refined_r"] += refined
        rows["masks_equal"].append(equal)
        rows["per_image"][image_id] = {"raw_r": raw, "refined_r": refined, "masks_equal": equal}
    return rows


def summary(rows: dict) -> dict:
    def stats(values):
        v = np.array([x for x in values if x == x])
        return {"median": float(np.median(v)), "lowest": float(v.min()), "n": int(len(v))}

    return {k: stats(rows[k]) for k in ("raw_r", "refined_r", "masks_equal")}


def job_spec(data: Path, work: Path, descriptors: Path | None, photos: list[dict] | None = None) -> dict:
    from wsss_ray.cam.prompts import class_texts
    from wsss_ray.labelset import load_labelset

    groups: dict[str, dict] = {}
    for item in photos or items(data):
        group = groups.get(item["subset"])
        if group is None:
            labelset = load_labelset(item["labelset"])
            group = groups[item["subset"]] = {
                "labelset": item["labelset"], "classes": [t[0] for t in class_texts(labelset, "concat")],
                "background": list(labelset.background), "templates": list(labelset.templates), "items": [],
                "descriptors": (str(shared_descriptors(descriptors, labelset, work / f"descriptors-{item['subset']}.json"))
                                if descriptors else None)}
        ls = load_labelset(item["labelset"])
        group["items"].append({**item, "class_ids": sorted(ls.class_ids(item["labels"]))})
    return {"groups": groups, "descriptors": bool(descriptors)}


def ensure_extra() -> None:
    """OpenCV (their boxes) and pkg_resources (their clip package), in a folder of their own."""
    if (EXTRA / "cv2").exists() and (EXTRA / "pkg_resources").exists():
        return
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(EXTRA),
                    "opencv-python-headless", "setuptools<81"], check=True)


def run(reference: Path, data: Path, descriptors: Path | None, work: Path, par_max_side: int | None) -> dict:
    weights = prepared(work)
    spec = job_spec(data, work, descriptors)
    job = work / f"job-{bool(descriptors)}.json"
    job.write_text(json.dumps(spec))
    theirs_file = work / f"theirs-{bool(descriptors)}.npz"
    if not theirs_file.exists():  # kept in --work: their side depends only on the photos and the weights
        their_run(reference, weights, job, theirs_file)
    theirs = dict(np.load(theirs_file))
    return compare(theirs, our_side(weights, spec, par_max_side))


def their_run(reference: Path, weights: Path, job: Path, out: Path, *extra: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXTRA), str(reference)]), "PYTHONWARNINGS": "ignore"}
    subprocess.run([sys.executable, __file__, "--their-side", str(reference), str(weights), str(job), str(out), *extra],
                   check=True, env=env, cwd=out.parent)


def speed(reference: Path, data: Path, work: Path, photos: int) -> None:
    """One thread, `photos` MSRC photos upscaled to 500x375, the model loaded: s/image of the CAM
    step and of the whole labeller, theirs and ours (excel and clip-es, float32 and `auto`)."""
    import torch
    from PIL import Image

    from wsss_ray.labeler import Labeler, model_autocast

    weights = prepared(work)
    chosen = items(data, ("msrc",), (500, 375), work)[:photos]
    spec = job_spec(data, work, None, chosen)
    job = work / "job-speed.json"
    job.write_text(json.dumps(spec))
    if not (work / "theirs-speed.npz").exists():
        their_run(reference, weights, job, work / "theirs-speed.npz")
    theirs = dict(np.load(work / "theirs-speed.npz"))
    their_seconds = np.array([theirs[f"{i['id']}/seconds"] for i in chosen])[1:].mean(0)  # the first warms up
    torch.set_num_threads(1)
    group = spec["groups"]["msrc"]
    images = [np.asarray(Image.open(i["image"]).convert("RGB")) for i in chosen]
    print(f"one thread, {len(chosen) - 1} photos at 500x375 (after one to warm up), model loaded; s/image\n")
    print("| flow | precision | CAM step | whole labeller | CAM step vs clip-es | whole vs theirs |")
    print("|---|---|---|---|---|---|")
    print(f"| ExCEL authors' code (training-free, PAR at full size, no CRF) | fp32 | {their_seconds[0]:.3f} | "
          f"{their_seconds[1]:.3f} | | 1.00x |")
    rows = {}
    for method in ("clip-es", "excel"):
        for precision in ("fp32", "auto"):
            labeler = Labeler.from_spec(MODEL, group["labelset"], method=method, pretrained=str(weights),
                                        precision=precision)
            cam, whole = [], []
            for image, item in zip(images, chosen):
                ids = labeler.class_ids(item["labels"])
                start = time.perf_counter()
                with model_autocast(precision, "cpu"):
                    if method == "excel":  # the maps at image size, before PAR
                        labeler.method.multiscale([image], [ids], labeler.method.config.scales,
                                                  labeler.method._grid_cams, normalise=False)
                    else:
                        labeler.method.cam_tensors([image], [ids])
                middle = time.perf_counter()
                labeler.label([image], [item["labels"]])
                cam.append(middle - start)
                whole.append(time.perf_counter() - middle)
            rows[method, precision] = (np.mean(cam[1:]), np.mean(whole[1:]))
    for (method, precision), (cam, whole) in rows.items():
        base = rows["clip-es", precision][0]
        print(f"| this project, `--method {method}` (its defaults) | {precision} | {cam:.3f} | {whole:.3f} | "
              f"{cam / base:.2f}x | {whole / their_seconds[1]:.2f}x |", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--their-side":
        (work := Path.cwd() / "attributes_text").mkdir(exist_ok=True)  # where their bank builder saves
        their_side(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, type=Path, help="a checkout of the authors' ExCEL repository")
    parser.add_argument("--descriptors", type=Path, default=None,
                        help="their class descriptions JSON (also run without them)")
    parser.add_argument("--data", type=Path, default=SAMPLE)
    parser.add_argument("--par-max-side", type=int, default=None, help="ours: PAR's budget (None: full size, as theirs)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "excel_parity.json")
    parser.add_argument("--work", type=Path, help="keep the weights and their side's results here, for reruns")
    parser.add_argument("--speed", type=int, metavar="N",
                        help="instead: time N photos at 500x375 on one thread, theirs and ours")
    args = parser.parse_args()
    if args.speed:
        with tempfile.TemporaryDirectory() as tmp:
            speed(args.reference.resolve(), args.data, (args.work or Path(tmp)).resolve(), args.speed + 1)
        return
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        for descriptors in [None] + ([args.descriptors] if args.descriptors else []):
            name = "with the descriptor bank" if descriptors else "calibration only"
            rows = compare_and_print(name, run(args.reference.resolve(), args.data, descriptors, work,
                                               args.par_max_side))
            report[name] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps({"out": str(args.out)}))


def compare_and_print(name: str, rows: dict) -> dict:
    s = summary(rows)
    print(f"{name}: maps before the affinity r {s['raw_r']['median']:.4f} median / {s['raw_r']['lowest']:.4f} lowest "
          f"({s['raw_r']['n']} maps); after it r {s['refined_r']['median']:.4f} / {s['refined_r']['lowest']:.4f}; "
          f"masks equal {100 * s['masks_equal']['median']:.2f} % median / {100 * s['masks_equal']['lowest']:.2f} % "
          f"lowest ({s['masks_equal']['n']} photos)", flush=True)
    worst = sorted(rows["per_image"].items(), key=lambda kv: kv[1]["masks_equal"])[:5]
    for image_id, r in worst:
        print(f"  {image_id}: masks {100 * r['masks_equal']:.2f} %, raw r {np.round(r['raw_r'], 4).tolist()}, "
              f"refined r {np.round(r['refined_r'], 4).tolist()}")
    return {"summary": s, "per_image": rows["per_image"]}


if __name__ == "__main__":
    main()
