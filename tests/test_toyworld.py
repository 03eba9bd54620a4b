import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss_ray.labelset import load_labelset
from wsss_ray.toyworld import CLASSES, SPLIT_SEEDS, generate, render, toyworld_labelset
from wsss_ray.toyworld.__main__ import main
from wsss_ray.toyworld.world import HOME, IN_CONTEXT_P


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_render_is_deterministic():
    for seed in (0, 7, 2_000_003):
        a, b = render(seed, 64), render(seed, 64)
        assert a.image.tobytes() == b.image.tobytes()
        assert a.mask.tobytes() == b.mask.tobytes()
        assert (a.labels, a.counts, a.stuff) == (b.labels, b.counts, b.stuff)


def test_different_seeds_differ():
    assert render(1).image.tobytes() != render(2).image.tobytes()


def test_render_shapes_and_labels_match_mask():
    for seed in range(20):
        s = render(seed, 48)
        assert s.image.shape == (48, 48, 3) and s.image.dtype == np.uint8
        assert s.mask.shape == (48, 48) and s.mask.dtype == np.uint8
        present = [CLASSES[v - 1] for v in np.unique(s.mask) if v != 0]
        assert list(s.labels) == present  # CLASSES order, exactly the classes in the mask
        assert len(s.labels) >= 1
        assert s.id == f"toy{seed:07d}"


def test_render_too_small_raises():
    with pytest.raises(ValueError, match="too small"):
        render(0, size=16)


def test_generate_is_byte_identical(tmp_path):
    generate(tmp_path / "a", 6, seed=10)
    generate(tmp_path / "b", 6, seed=10)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 6 * 2 + 2  # images, masks, manifest, labelset
    assert a == b


def test_generate_rejects_empty(tmp_path):
    with pytest.raises(ValueError):
        generate(tmp_path, 0)


def test_generate_follows_the_data_contract(tmp_path):
    manifest = generate(tmp_path, 8, seed=100, size=48)
    assert manifest == tmp_path / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    assert len(lines) == 8
    labelset = toyworld_labelset()
    for i, line in enumerate(lines):
        item = json.loads(line)
        assert set(item) == {"id", "image", "labels", "mask"}
        assert item["id"] == f"toy{100 + i:07d}"
        image = Image.open(tmp_path / item["image"])
        mask_img = Image.open(tmp_path / item["mask"])
        assert image.mode == "RGB"
        assert mask_img.mode in ("P", "L")  # single channel, 8 bit
        assert mask_img.size == image.size == (48, 48)
        mask = np.array(mask_img)
        assert mask.dtype == np.uint8 and mask.ndim == 2
        assert set(np.unique(mask).tolist()) <= set(range(len(CLASSES) + 1))
        present = [labelset.names[v - 1] for v in sorted(set(np.unique(mask).tolist()) - {0})]
        assert item["labels"] == present
        # the files hold exactly what render() produces
        sample = render(100 + i, 48)
        assert np.array_equal(mask, sample.mask)
        assert np.array_equal(np.array(image), sample.image)


def test_labelset_yaml_agrees_with_code(tmp_path):
    generate(tmp_path, 1)
    written = load_labelset(tmp_path / "labelset.yaml")
    assert written == toyworld_labelset()
    assert load_labelset("toyworld") == toyworld_labelset()  # bundled copy agrees with world.py


def test_split_seeds_do_not_overlap():
    n = 100_000
    ranges = [set(range(s, s + n)) for s in SPLIT_SEEDS.values()]
    for i in range(len(ranges)):
        for j in range(i + 1, len(ranges)):
            assert not ranges[i] & ranges[j]
    assert set(SPLIT_SEEDS) == {"train", "val", "test"}


def test_cli_generate_split(tmp_path, capsys):
    out = tmp_path / "test5"
    assert main(["generate", "--out", str(out), "--n", "5", "--split", "test"]) == 0
    items = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    assert [it["id"] for it in items] == [f"toy{2_000_000 + i}" for i in range(5)]
    assert all((out / it["image"]).is_file() and (out / it["mask"]).is_file() for it in items)
    printed = json.loads(capsys.readouterr().out)
    assert printed["n"] == 5 and printed["first_seed"] == 2_000_000


def test_cli_seed_and_size(tmp_path):
    out = tmp_path / "s"
    main(["generate", "--out", str(out), "--n", "2", "--seed", "42", "--size", "40"])
    items = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    assert [it["id"] for it in items] == ["toy0000042", "toy0000043"]
    assert Image.open(out / items[0]["image"]).size == (40, 40)


def test_cli_seed_and_split_are_exclusive(tmp_path):
    with pytest.raises(SystemExit):
        main(["generate", "--out", str(tmp_path), "--n", "1", "--seed", "1", "--split", "val"])


def test_objects_mostly_appear_in_context():
    """The scene is the first object's home with probability IN_CONTEXT_P.

    An image with a single class has that class as its first object, so its scene should
    be that class's home in about IN_CONTEXT_P of images (a bit more: an out-of-context
    draw can land on the home scene too).
    Images with a boat somewhere are only ~55% on water by design (a boat is often a second
    object in another class's scene), so the boat check uses boat-only images.
    """
    samples = [render(s, 32) for s in range(SPLIT_SEEDS["train"], SPLIT_SEEDS["train"] + 600)]
    single = [s for s in samples if len(s.labels) == 1]
    at_home = np.mean([s.stuff == HOME[s.labels[0]] for s in single])
    assert len(single) > 200
    assert IN_CONTEXT_P - 0.05 < at_home < IN_CONTEXT_P + 0.2

    boat_only = [s for s in samples if s.labels == ("boat",)]
    no_boat = [s for s in samples if "boat" not in s.labels]
    water_with_boat = np.mean([s.stuff[1] == "water" for s in boat_only])
    water_without = np.mean([s.stuff[1] == "water" for s in no_boat])
    assert len(boat_only) >= 20
    assert water_with_boat > 0.6
    assert water_with_boat > 5 * water_without
