import pytest
import yaml

from wsss_ray.labelset import BUILTINS, ClassSpec, Labelset, load_labelset


def test_voc_builtin():
    voc = load_labelset("voc")
    assert voc.name == "voc"
    assert len(voc) == 20
    assert voc.names[0] == "aeroplane" and voc.names[-1] == "tvmonitor"
    assert len(voc.background) == 25
    assert voc.templates == ("a clean origami {}.",)
    # CLIP-ES's clip_text.py: 'person with clothes,people,human'
    assert voc.classes[voc.index("person")].words == ("person with clothes", "people", "human")
    assert voc.index("aeroplane") == 0


def test_coco_and_toyworld_builtins():
    coco = load_labelset("coco")
    assert len(coco) == 80
    assert len(set(coco.names)) == 80
    assert "person" in coco.names
    toy = load_labelset("toyworld")
    assert toy.names == ("boat", "plane", "car", "cow", "bird", "chair", "bottle", "sheep")
    assert set(BUILTINS) == {"voc", "coco", "toyworld"}


def test_load_labelset_passes_labelset_through():
    ls = load_labelset("toyworld")
    assert load_labelset(ls) is ls


def test_index_and_unknown_label_message():
    ls = Labelset("pets", (ClassSpec("cat"), ClassSpec("dog")))
    assert ls.index("dog") == 1
    with pytest.raises(KeyError) as e:
        ls.index("horse")
    msg = str(e.value)
    assert "horse" in msg and "pets" in msg and "cat" in msg and "dog" in msg


def test_words_default_to_name():
    assert ClassSpec("cat").words == ("cat",)
    assert ClassSpec("cat", ("cat", "kitty")).words == ("cat", "kitty")


def test_yaml_round_trip(tmp_path):
    ls = Labelset(
        "custom",
        (ClassSpec("cat", ("cat", "kitty")), ClassSpec("dog")),
        templates=("a photo of a {}.", "a drawing of a {}."),
        background=("sky", "grass"),
    )
    assert Labelset.from_dict(yaml.safe_load(ls.to_yaml())) == ls
    path = tmp_path / "custom.yaml"
    path.write_text(ls.to_yaml())
    assert load_labelset(path) == ls
    assert load_labelset(str(path)) == ls


def test_from_dict_accepts_plain_names_and_defaults():
    ls = Labelset.from_dict({"classes": ["a", "b"]})
    assert ls.names == ("a", "b")
    assert ls.name == "custom"
    assert ls.templates == ("a photo of a {}.",)
    assert ls.background == ()


def test_invalid_template_raises():
    with pytest.raises(ValueError, match=r"\{\}"):
        Labelset("x", (ClassSpec("a"),), templates=("a photo of a thing.",))
    with pytest.raises(ValueError):
        Labelset("x", (ClassSpec("a"),), templates=("{} and {}",))


def test_duplicate_and_missing_classes_raise():
    with pytest.raises(ValueError, match="more than once"):
        Labelset("x", (ClassSpec("a"), ClassSpec("b"), ClassSpec("a")))
    with pytest.raises(ValueError):
        Labelset("x", ())
    with pytest.raises(ValueError, match="classes"):
        Labelset.from_dict({"name": "x"})


def test_yaml_that_is_not_a_mapping_raises(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        load_labelset(path)


def test_missing_file_raises(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError) as e:
        load_labelset(missing)
    msg = str(e.value)
    assert str(missing) in msg and "built-in" in msg and "voc" in msg
