import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from wsss_ray.export import main
from wsss_ray.masks import encode_png
from wsss_ray.store import OUTPUT_SCHEMA


def _row(i, status, mask, confidence=200):
    return {"id": i, "image": f"{i}.png", "labels": ["cow"], "width": 3, "height": 2,
            "mask": encode_png(mask) if mask is not None else None,
            "confidence": encode_png(np.full((2, 3), confidence, np.uint8) if np.isscalar(confidence) else confidence,
                                     palette=False) if mask is not None else None,
            "status": status, "error": None if status == "ok" else "cannot read image",
            "labelset": "toyworld", "model": "toyclip", "method": "clip-es"}


def test_export_writes_palette_pngs_for_ok_rows(tmp_path, capsys):
    mask = np.array([[0, 4, 4], [255, 0, 4]], np.uint8)
    out = tmp_path / "out"
    out.mkdir()
    rows = [_row("a", "ok", mask), _row("sub/b", "ok", mask), _row("bad", "error", None)]
    pq.write_table(pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA), out / "part.parquet")
    assert main([str(out), "--format", "png", "--to", str(tmp_path / "png"), "--confidence-dir", str(tmp_path / "conf")]) == 0
    assert '"written": 2' in capsys.readouterr().out
    png = Image.open(tmp_path / "png" / "a.png")
    assert png.mode == "P" and np.array_equal(np.array(png), mask)
    assert (tmp_path / "png" / "sub" / "b.png").is_file() and not (tmp_path / "png" / "bad.png").exists()
    assert np.array(Image.open(tmp_path / "conf" / "a.png")).max() == 200
    first = (tmp_path / "png" / "a.png").read_bytes()
    main([str(out), "--png-dir", str(tmp_path / "png")])  # the earlier spelling of --format png --to
    assert (tmp_path / "png" / "a.png").read_bytes() == first  # idempotent


def test_export_of_a_missing_output_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nope"), "--to", str(tmp_path / "png")])


def test_ids_that_escape_the_folder_are_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(pa.Table.from_pylist([_row("../evil", "ok", np.zeros((2, 3), np.uint8))], schema=OUTPUT_SCHEMA),
                   out / "part.parquet")
    with pytest.raises(SystemExit):
        main([str(out), "--to", str(tmp_path / "png")])
    assert "would be written outside" in capsys.readouterr().err
    assert not (tmp_path / "evil.png").exists()


def test_min_confidence_writes_ignore_below_it(tmp_path, capsys):
    mask = np.array([[0, 4, 4], [1, 0, 4]], np.uint8)
    conf = np.array([[255, 240, 243], [250, 100, 242]], np.uint8)  # 0.95 * 255 = 242.25
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(pa.Table.from_pylist([_row("a", "ok", mask, conf)], schema=OUTPUT_SCHEMA), out / "part.parquet")
    main([str(out), "--to", str(tmp_path / "full")])
    main([str(out), "--to", str(tmp_path / "kept"), "--min-confidence", "0.95"])
    assert np.array_equal(np.array(Image.open(tmp_path / "full" / "a.png")), mask)
    assert np.array(Image.open(tmp_path / "kept" / "a.png")).tolist() == [[0, 255, 4], [1, 255, 255]]


def test_the_export_holds_a_few_hundred_rows_at_a_time_whatever_the_size_of_the_output(tmp_path, monkeypatch):
    """Two files of 700 rows: the export sees them in batches of at most 256 rows, each once."""
    import wsss_ray.export as export

    out = tmp_path / "out"
    out.mkdir()
    mask = np.zeros((2, 3), np.uint8)
    for f in range(2):
        rows = [_row(f"{f}-{i}", "ok", mask) for i in range(700)]
        pq.write_table(pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA), out / f"part-{f}.parquet")
    seen = []
    real = export.iter_output

    def counted(*args, **kwargs):
        for batch in real(*args, **kwargs):
            seen.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(export, "iter_output", counted)
    assert export.export_pngs(str(out), str(tmp_path / "png"))["written"] == 1400
    assert sum(seen) == 1400 and max(seen) <= 256
    assert len(list((tmp_path / "png").iterdir())) == 1400
