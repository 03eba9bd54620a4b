"""The collection as a Ray Dataset: parallel manifest shards, resume and repeated ids by shuffle, per-block mIoU."""

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from wsss_ray.store.inputs import ITEM_SCHEMA, item_table, pending, pending_block, read_items
from wsss_ray.masks import encode_png
from wsss_ray.metrics import accumulate, scores
from wsss_ray.store import parquet_files
from wsss_ray.progress import RowCounter
from wsss_ray.store import Item
from wsss_ray.store import AtomicParquetSink, evaluate_output

pytestmark = pytest.mark.slow  # each test runs on a local Ray

def _rows(ds: ray.data.Dataset) -> list[dict]:
    return sorted(ds.take_all(), key=lambda r: (r["id"], r["status"]))


def test_manifest_shards_are_read_in_parallel_with_paths_against_each_shard(ray_local, tmp_path):
    (tmp_path / "m" / "b").mkdir(parents=True)
    (tmp_path / "m" / "a.jsonl").write_text(
        json.dumps({"id": "x1", "image": "img/1.jpg", "labels": ["cow"], "mask": "gt/1.png"}) + "\n\n"
        + json.dumps({"id": "x2", "image": "s3://bucket/2.jpg", "labels": ["cow", "sheep"]}) + "\n")
    pq.write_table(pa.table({"id": ["y1", "y2"], "image": ["1.jpg", "/abs/2.jpg"], "labels": [["bird"], []]}),
                   tmp_path / "m" / "b" / "part-0.parquet")
    (tmp_path / "m" / "_SUCCESS").write_text("")  # not a shard
    ds, partitions, estimated = read_items(str(tmp_path / "m"))
    assert partitions == 1 and estimated > 0
    rows = {r["id"]: r for r in ds.take_all()}
    assert sorted(rows) == ["x1", "x2", "y1", "y2"]
    assert rows["x1"]["image"] == str(tmp_path / "m" / "img" / "1.jpg")
    assert rows["x1"]["mask"] == str(tmp_path / "m" / "gt" / "1.png") and rows["x2"]["mask"] is None
    assert rows["x2"]["image"] == "s3://bucket/2.jpg" and list(rows["x2"]["labels"]) == ["cow", "sheep"]
    assert rows["y1"]["image"] == str(tmp_path / "m" / "b" / "1.jpg") and rows["y2"]["image"] == "/abs/2.jpg"
    assert (rows["x2"]["source"], rows["x2"]["line"]) == (str(tmp_path / "m" / "a.jsonl"), 3)  # blank line counted
    assert (rows["y2"]["source"], rows["y2"]["line"]) == (str(tmp_path / "m" / "b" / "part-0.parquet"), 2)
    assert {r["status"] for r in rows.values()} == {"ok"}


def test_a_malformed_line_becomes_an_error_row_naming_file_and_line(ray_local, tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join([json.dumps({"id": "a", "image": "a.jpg", "labels": ["cow"]}), "{not json",
                                   json.dumps({"id": "b", "image": "b.jpg", "labels": "cow"}),
                                   json.dumps({"id": "c", "image": "c.jpg", "labels": []})]) + "\n")
    ds, _, estimated = read_items(str(manifest))
    assert estimated == 4  # a single shard's lines per byte, times its bytes
    rows = {r["id"]: r for r in ds.take_all()}
    assert sorted(rows) == [f"{manifest}:2", "a", "b", "c"]
    assert rows[f"{manifest}:2"]["status"] == "error"
    assert rows[f"{manifest}:2"]["error"].startswith(f"{manifest}:2: not a manifest line with id, image and labels")
    assert rows["b"]["status"] == "error" and rows["b"]["error"].startswith(f"{manifest}:3: ")
    assert "labels must be a list" in rows["b"]["error"]
    assert rows["a"]["status"] == rows["c"]["status"] == "ok"


def test_a_missing_source_fails_before_any_image_is_read(ray_local, tmp_path):
    with pytest.raises(ValueError, match="manifest .*nope.jsonl does not exist"):
        read_items(str(tmp_path / "nope.jsonl"))
    with pytest.raises(ValueError, match="ImageSets/Segmentation/train.txt"):  # raised in the listing task
        read_items(f"voc:{tmp_path}")


def _block(rows: list[tuple]) -> pa.Table:
    """ITEM_SCHEMA rows from (id, source, line, written, mask)."""
    return pa.table({
        "id": [r[0] for r in rows], "image": [f"{r[0]}.jpg" for r in rows], "labels": [["cow"]] * len(rows),
        "mask": [r[4] for r in rows], "status": ["ok"] * len(rows), "error": [None] * len(rows),
        "source": [r[1] for r in rows], "line": [r[2] for r in rows], "written": [r[3] for r in rows],
    }, schema=ITEM_SCHEMA)


def test_pending_block_drops_written_ids_and_keeps_the_first_of_repeated_ones(ray_local):
    counter = RowCounter.remote()
    block = _block([("b", "m1", 9, False, None), ("a", "m2", 1, False, "a.png"), ("b", "m1", 2, False, None),
                    ("c", "m1", 3, False, "c.png"), ("c", None, None, True, None), ("b", "m0", 50, False, None)])
    out = pending_block(block, counter).to_pylist()
    assert [(r["id"], r["source"], r["line"], r["status"]) for r in out] == [
        ("a", "m2", 1, "ok"), ("b", "m0", 50, "ok"), ("b", "m1", 2, "error"), ("b", "m1", 9, "error")]
    assert out[2]["error"] == "duplicate id 'b' in the input; ids must be unique"
    assert "written" not in out[0]
    assert ray.get(counter.counts.remote()) == {"done": 0, "pending": 4, "skipped": 1, "truth": 2, "partitions": 1,
                                                "started": {}}


def test_pending_resumes_and_marks_repeats_across_many_blocks(ray_local, tmp_path):
    """1,000 items in 10 blocks, ids repeated across blocks, 300 already written: each id done once."""
    items = [Item(f"id{i % 900:04d}", f"{i}.jpg", ("cow",)) for i in range(1000)]  # id0000..0099 twice
    tables = [item_table(items[k:k + 100], f"shard{k // 100}") for k in range(0, 1000, 100)]
    out = tmp_path / "out"
    out.mkdir()
    written = pa.table({"id": [f"id{i:04d}" for i in range(50, 350)]})
    pq.write_table(written.slice(0, 150), out / "part-a.parquet")
    pq.write_table(written.slice(150), out / "part-b.parquet")
    counter = RowCounter.remote()
    ds = pending(ray.data.from_arrow(tables), 4, parquet_files(str(out)), rows_per_block=64, counter=counter).materialize()
    rows = ds.take_all()
    ok = sorted(r["id"] for r in rows if r["status"] == "ok")
    assert ok == [f"id{i:04d}" for i in range(900) if not 50 <= i < 350]
    repeats = [r for r in rows if r["status"] == "error"]
    assert sorted(r["id"] for r in repeats) == [f"id{i:04d}" for i in range(50)]  # 50..99 were written already
    assert all(r["source"] == "shard9" for r in repeats)  # the first occurrence (shard0) is the one labelled
    sizes = ds.map_batches(lambda t: pa.table({"n": [t.num_rows]}), batch_size=None, batch_format="pyarrow")
    assert max(r["n"] for r in sizes.take_all()) <= 64  # blocks of at most a batch, spread over tasks and actors
    counts = ray.get(counter.counts.remote())
    assert (counts["pending"], counts["skipped"], counts["partitions"]) == (650, 350, 4)


def test_evaluation_sums_per_block_confusion_matrices_to_the_direct_miou(ray_local, tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    truth_masks = [rng.integers(0, 3, (6, 7)).astype(np.uint8) for _ in range(30)]
    preds = [np.where(rng.random((6, 7)) < 0.7, t, rng.integers(0, 3, (6, 7))).astype(np.uint8) for t in truth_masks]
    lines = []
    for i, t in enumerate(truth_masks):
        (tmp_path / f"{i}.png").write_bytes(encode_png(t))
        lines.append(json.dumps({"id": f"x{i}", "image": f"{i}.jpg", "labels": ["cow"], "mask": f"{i}.png"}))
    lines.append(json.dumps({"id": "nomask", "image": "n.jpg", "labels": ["cow"]}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    sink = AtomicParquetSink(str(tmp_path / "out"))
    sink.on_write_start()
    status = ["error" if i % 10 == 0 else "ok" for i in range(30)]  # error rows count as all background
    table = pa.table({"id": [f"x{i}" for i in range(30)] + ["nomask"], "status": status + ["ok"],
                      "mask": [encode_png(p) if s == "ok" else None for p, s in zip(preds, status)]
                      + [encode_png(preds[0])]})
    sink.write([table.slice(0, 12)], None)
    sink.write([table.slice(12)], None)
    expected = scores(accumulate([(t, p if s == "ok" else np.zeros_like(t))
                                  for t, p, s in zip(truth_masks, preds, status)], 3)).miou
    import wsss_ray.store.writer as writer

    monkeypatch.setattr(writer, "ROWS_PER_EVALUATION_PARTITION", 7)  # several partitions
    assert evaluate_output(str(tmp_path / "out"), str(tmp_path / "m.jsonl"), 3, truth=30) == round(expected, 4)
    assert evaluate_output(str(tmp_path / "out"), str(tmp_path / "m.jsonl"), 3, truth=0) is None


def test_the_labelling_driver_imports_neither_torch_nor_open_clip(ray_local, tmp_path):
    """The driver checks settings, reads, resumes and evaluates without the model's libraries."""
    from wsss_ray.toyworld import generate

    manifest = generate(tmp_path / "toy", 3, seed=2_000_900)
    code = f"""
import json, sys, ray
from wsss_ray.config import resolve_label_job
from wsss_ray.pipeline import run
ray.init(address={ray_local!r}, log_to_driver=False)  # a driver of the session's Ray
summary = run(resolve_label_job({{"input": {str(manifest)!r}, "output": {str(tmp_path / 'out')!r},
                                 "post": {{"crf": {{"iters": 0}}}}}}))
print(json.dumps({{"rows": summary["rows"], "miou": summary["miou"],
                  "heavy": sorted(m for m in ("torch", "open_clip") if m in sys.modules)}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 3 and summary["miou"] is not None and summary["heavy"] == []

