import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torchvision.models import mobilenet_v3_large

from wsss_ray.train.model import ARCHS, build_model, load_backbone_weights, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("arch", ["tiny", "lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"])
def test_logits_at_input_resolution(arch):
    torch.manual_seed(0)
    model = build_model(5, arch).eval()
    with torch.no_grad():
        for size in [(64, 64), (48, 80)]:
            out = model(torch.randn(2, 3, *size))
            assert out.shape == (2, 5, *size) and out.dtype == torch.float32


def test_registry_and_errors():
    assert {"tiny", "deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50", "lraspp_mobilenet_v3_large"} <= set(ARCHS)
    from wsss_ray.config import ARCHS as SETTINGS_ARCHS

    assert set(SETTINGS_ARCHS) == set(ARCHS)  # the settings check (no torch) names exactly these
    with pytest.raises(ValueError, match=r"unknown --arch 'unet'; choose from \["):
        build_model(3, "unet")
    with pytest.raises(ValueError, match="at least 2"):
        build_model(1, "tiny")


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    model = build_model(4, "tiny")
    with torch.no_grad():  # make the BN running stats non-default so they are checked too
        model.train()(torch.randn(4, 3, 32, 32))
    path = save_checkpoint(tmp_path / "ckpt" / "model.pt", model, {"labelset": "toyworld", "epoch": 3})
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary left behind
    loaded, meta = load_checkpoint(path)
    assert meta == {"labelset": "toyworld", "epoch": 3, "arch": "tiny", "num_classes": 4}
    assert not loaded.training
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_checkpoint_unwraps_ddp_and_checks_meta(tmp_path):
    model = build_model(3, "tiny")
    wrapped = nn.Module()
    wrapped.module = model  # what DistributedDataParallel looks like
    _, meta = load_checkpoint(save_checkpoint(tmp_path / "a.pt", wrapped))
    assert meta == {"arch": "tiny", "num_classes": 3}
    with pytest.raises(ValueError, match="contradicts"):
        save_checkpoint(tmp_path / "b.pt", model, {"num_classes": 7})
    with pytest.raises(ValueError, match="JSON-like"):
        save_checkpoint(tmp_path / "c.pt", model, {"when": object()})
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a wsss-ray segmentation checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_backbone_weights_from_a_backbone_state_dict(tmp_path):
    torch.manual_seed(2)
    donor = build_model(3, "tiny")
    torch.save(donor.backbone.state_dict(), tmp_path / "bb.pt")
    torch.manual_seed(3)
    model = build_model(3, "tiny", backbone_weights=tmp_path / "bb.pt")
    for name, tensor in donor.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], tensor), name
    assert not torch.equal(model.net.classifier[-1].weight, donor.net.classifier[-1].weight)


def test_backbone_weights_from_a_classifier_checkpoint(tmp_path):
    torch.manual_seed(4)
    classifier = mobilenet_v3_large(weights=None)
    save_file(classifier.state_dict(), str(tmp_path / "mnv3.safetensors"))
    model = build_model(3, "deeplabv3_mobilenet_v3_large")
    loaded = load_backbone_weights(model, tmp_path / "mnv3.safetensors")  # keys "features.N..." -> "N..."
    assert len(loaded) == len(model.backbone.state_dict())
    assert torch.equal(model.backbone.state_dict()["0.0.weight"], classifier.features[0][0].weight)


def test_backbone_weights_without_a_match(tmp_path):
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="no tensor in .* matches the 'tiny' backbone"):
        build_model(3, "tiny", backbone_weights=tmp_path / "bad.pt")
