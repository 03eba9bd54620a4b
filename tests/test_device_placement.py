"""Where each per-image step of a GPU CAM actor runs: on the actor's device, every step
from the uploaded pixels to the mask, confidence and quality numbers, with one copy of
each kind back to the host per batch (``wsss_ray.post.to_host``).

On a CPU the device path is forced (``post_on_device``) and a torch function mode
watches every call: no tensor may leave for the host (``.cpu()``, ``.numpy()``,
``.item()``, ``.tolist()``, ``float()``...) outside ``to_host``, and the host-side
implementations (numpy CRF, scipy's labelling, PIL resizing) must not run. With a GPU,
the same test also checks that every tensor the steps touch is on it.
"""

import inspect

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

import wsss_ray.crf
import wsss_ray.quality
from wsss_ray.config import CrfConfig
from wsss_ray.labeler import Labeler
from wsss_ray.toyworld import render

TO_HOST = {torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__float__,
           torch.Tensor.__int__, torch.Tensor.__bool__, torch.Tensor.__array__}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class Watch(TorchFunctionMode):
    """Records each transfer to the host with the function that asked for it, and the devices
    of every tensor argument."""

    def __init__(self, device: str):
        super().__init__()
        self.device = device
        self.to_host: list[str] = []
        self.copies = 0
        self.devices: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # on a CPU, .to(the device) is the upload; on a GPU, .to("cpu") would be a copy back
        if func in TO_HOST or (func is torch.Tensor.to and self.device != "cpu" and _to_cpu(args, kwargs)):
            self.to_host.append(_caller())
            self.copies += func in (torch.Tensor.cpu, torch.Tensor.to)
        for a in [*args, *kwargs.values()]:
            for t in (a if isinstance(a, (list, tuple)) else [a]):
                if isinstance(t, torch.Tensor) and t.dim() > 0:
                    self.devices.add(t.device.type)
        return func(*args, **kwargs)


def _to_cpu(args, kwargs) -> bool:
    target = kwargs.get("device", args[1] if len(args) > 1 else None)
    return isinstance(target, (str, torch.device)) and torch.device(target).type == "cpu"


def _caller() -> str:
    """The first frame outside torch and this file: who asked for the copy."""
    for frame in inspect.stack()[2:]:
        module = frame.frame.f_globals.get("__name__", "")
        if not module.startswith("torch") and module != __name__:
            return f"{module}.{frame.function}"
    return "?"


def _refuse(*args, **kwargs):
    raise AssertionError("a host-side implementation ran in the device path")


@pytest.fixture
def host_steps_refused(monkeypatch):
    import PIL.Image
    import scipy.ndimage

    for module, name in ((wsss_ray.crf, "dense_crf"), (wsss_ray.crf, "upsample_labels"),
                         (wsss_ray.crf, "refine_scored"), (wsss_ray.crf, "resize_probs"),
                         (wsss_ray.quality, "signals"), (scipy.ndimage, "label"), (PIL.Image.Image, "resize")):
        monkeypatch.setattr(module, name, _refuse)


@pytest.mark.parametrize("device", DEVICES)
def test_every_step_after_decoding_runs_on_the_actors_device(device, host_steps_refused):
    labeler = Labeler.from_spec("toyclip", "toyworld", device=device, precision="fp32",
                                settings={"caa": True}, post={"crf": {"backend": "torch", "downsample": 1}})
    labeler.post_on_device = True  # on a CPU, as a GPU actor sets it
    images = [render(3_000_000 + i, 64).image for i in range(3)]
    labels = [["cow"], ["boat", "car"], []]
    assert all(labeler.fits_device(image) for image in images)
    watch = Watch(device)
    with watch:
        cams = labeler.cam_tensors(images, labels)
        done = labeler.masks_on_device(images, cams, labels)
    assert set(watch.to_host) == {"wsss_ray.post.to_host"}, watch.to_host
    assert watch.copies == 2  # the batch's masks and confidences, and its quality signals
    if device != "cpu":
        assert watch.devices == {device}, watch.devices
    for (mask, confidence, quality, label_quality), lab in zip(done, labels):
        assert mask.shape == confidence.shape == (64, 64) and mask.dtype == confidence.dtype == np.uint8
        assert 0 <= quality <= 1 and len(label_quality) == len(lab)


@pytest.mark.parametrize("device", DEVICES)
def test_the_device_path_gives_the_host_paths_masks(device):
    """The mask, confidence and scores made on the device equal the host path's (the numpy
    CRF entry point with the same torch backend), up to float rounding at a few pixels."""
    crf = {"backend": "torch", "downsample": 1}
    labeler = Labeler.from_spec("toyclip", "toyworld", device=device, precision="fp32", post={"crf": crf})
    images = [render(3_000_100 + i, 64).image for i in range(4)]
    labels = [["cow", "sheep"], ["boat"], ["car", "plane"], ["bird"]]
    host = labeler.label(images, labels)
    labeler.post_on_device = True
    here = labeler.label(images, labels)
    for h, d in zip(host, here):
        assert (h.mask == d.mask).mean() > 0.999
        assert np.abs(h.confidence.astype(int) - d.confidence.astype(int)).max() <= 1
        assert d.quality == pytest.approx(h.quality, abs=1e-4)
        np.testing.assert_allclose(d.label_quality, h.label_quality, atol=1e-4)


def test_images_beyond_the_crfs_budget_stay_on_the_host_path():
    labeler = Labeler.from_spec("toyclip", "toyworld", post={"crf": {"backend": "torch", "max_side": 48}})
    labeler.post_on_device = True
    assert not labeler.fits_device(np.zeros((64, 64, 3), np.uint8))
    assert labeler.fits_device(np.zeros((48, 30, 3), np.uint8))
    labeler.post_on_device = False
    assert not labeler.fits_device(np.zeros((48, 30, 3), np.uint8))


def test_a_cpu_labeller_keeps_the_reference_crf_and_the_host_path():
    labeler = Labeler.from_spec("toyclip", "toyworld")
    assert labeler.post_on_device is False
    assert labeler.crf == CrfConfig(**{**vars(labeler.post.crf), "backend": "pydensecrf"})
