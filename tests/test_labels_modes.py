"""Where an item's labels come from (--labels given|missing|auto), end to end on local Ray."""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from wsss_ray.config import LabelJobConfig, resolve_label_job
from wsss_ray.errors import JobError
from wsss_ray.masks import decode_png
from wsss_ray.store import OUTPUT_SCHEMA, read_output
from wsss_ray.pipeline import NO_LABELS, run
from wsss_ray.toyworld import generate
from wsss_ray.testing.settings import toy_job

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _job(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_job", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lines(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


def _rows(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in read_output(str(out)).to_pylist()}


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("toy"), 8, seed=2_000_000)


def test_a_folder_of_images_without_labels_is_labelled_by_the_job_with_labels_auto(ray_local, toy, tmp_path, capsys, mlflow_uri):
    folder = tmp_path / "photos"
    folder.mkdir()
    for line in _lines(toy):
        shutil.copy(toy.parent / line["image"], folder / f"{line['id']}.png")
    out = tmp_path / "out"
    assert _job("pseudolabel").main(["--input", str(folder), "--labels", "auto", "--output", str(out),
                                     "--mlflow-uri", mlflow_uri]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["rows"], summary["ok"], summary["labels_predicted"], summary["labels_given"]) == (8, 8, 8, 0)
    assert "tag_f1" not in summary  # nothing given to score against
    rows = _rows(out)
    truth = {line["id"]: set(line["labels"]) for line in _lines(toy)}
    assert all(r["labels_source"] == "predicted" and len(r["label_scores"]) == len(r["labels"]) for r in rows.values())
    assert all(r["label_scores"] == sorted(r["label_scores"], reverse=True) for r in rows.values())
    threshold = resolve_label_job({}).tagger.threshold  # toyclip's own
    assert all(s >= threshold for r in rows.values() for s in r["label_scores"])
    proposed = sum(len(r["labels"]) for r in rows.values())
    right = sum(len(set(r["labels"]) & truth[i]) for i, r in rows.items())
    assert proposed and right / proposed >= 0.6  # 0.87 of the labels it keeps are right on 500 (docs/RESULTS.md)
    for r in rows.values():  # the masks hold only the proposed classes
        assert set(np.unique(decode_png(r["mask"]))) <= {0} | {
            ["boat", "plane", "car", "cow", "bird", "chair", "bottle", "sheep"].index(l) + 1 for l in r["labels"]}


def test_given_refuses_a_folder_without_labels_and_makes_an_item_without_labels_an_error_row(ray_local, toy, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(toy.parent / _lines(toy)[0]["image"], folder / "a.png")
    with pytest.raises(JobError, match="has no labels.jsonl or labels.csv.*--labels missing"):
        run(toy_job(input=str(folder), output=str(tmp_path / "refused"), labels="given"))
    lines = _lines(toy)[:4]
    del lines[1]["labels"]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({**l, "image": str(toy.parent / l["image"]),
                                            "mask": str(toy.parent / l["mask"])}) + "\n" for l in lines))
    summary = run(toy_job(input=str(manifest), output=str(tmp_path / "out"), labels="given", batch_size=4))
    assert (summary["ok"], summary["errors"], summary["labels_given"]) == (3, 1, 3)
    rows = _rows(tmp_path / "out")
    bad = rows[lines[1]["id"]]
    assert bad["status"] == "error" and bad["error"] == NO_LABELS and bad["labels"] is None
    assert all(rows[l["id"]]["labels"] == l["labels"] for l in lines if "labels" in l)


def test_missing_proposes_labels_only_for_the_lines_without_and_auto_scores_the_given_ones(ray_local, toy, tmp_path):
    lines = [{**l, "image": str(toy.parent / l["image"]), "mask": str(toy.parent / l["mask"])} for l in _lines(toy)]
    half = [{k: v for k, v in l.items() if k != "labels"} if i % 2 else l for i, l in enumerate(lines)]
    half[3]["labels"] = None  # null is as absent
    manifest = tmp_path / "half.jsonl"
    manifest.write_text("".join(json.dumps(l) + "\n" for l in half))
    summary = run(toy_job(input=str(manifest), output=str(tmp_path / "missing"), batch_size=4))
    assert LabelJobConfig().labels == toy_job().labels == "missing"
    assert (summary["ok"], summary["labels_given"], summary["labels_predicted"]) == (8, 4, 4)
    assert "tag_f1" not in summary
    rows = _rows(tmp_path / "missing")
    for i, line in enumerate(lines):
        r = rows[line["id"]]
        if i % 2:
            assert r["labels_source"] == "predicted" and len(r["label_scores"]) == len(r["labels"])
        else:
            assert (r["labels_source"], r["labels"], r["label_scores"]) == ("given", line["labels"], None)

    full = tmp_path / "full.jsonl"
    full.write_text("".join(json.dumps(l) + "\n" for l in lines))
    summary = run(toy_job(input=str(full), output=str(tmp_path / "auto"), labels="auto", batch_size=4))
    rows = _rows(tmp_path / "auto")
    assert summary["labels_predicted"] == 8 and {r["labels_source"] for r in rows.values()} == {"predicted"}
    truth = {l["id"]: set(l["labels"]) for l in lines}
    proposed = {i: set(r["labels"]) for i, r in rows.items()}
    right = sum(len(truth[i] & proposed[i]) for i in truth)
    assert summary["tags_scored"] == 8
    assert summary["tag_precision"] == round(right / sum(map(len, proposed.values())), 4)
    assert summary["tag_recall"] == round(right / sum(map(len, truth.values())), 4)
    assert summary["tag_exact"] == round(sum(truth[i] == proposed[i] for i in truth) / 8, 4)


def test_an_empty_proposed_label_set_gives_an_all_background_mask_and_says_so(ray_local, toy, tmp_path):
    config = toy_job(input=str(toy), output=str(tmp_path / "out"), labels="auto", tagger={"threshold": 1.0},
                     batch_size=4, limit=4)
    summary = run(config)
    assert (summary["ok"], summary["errors"], summary["labels_predicted"]) == (4, 0, 4)
    table = read_output(str(tmp_path / "out"))
    assert table.schema.equals(OUTPUT_SCHEMA)
    for r in table.to_pylist():
        assert r["status"] == "ok" and r["labels"] == [] and r["label_scores"] == []
        assert "proposed no label" in r["error"] and "all background" in r["error"]
        assert not decode_png(r["mask"]).any()
