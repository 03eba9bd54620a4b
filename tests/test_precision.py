"""``precision: auto`` off a CPU: measured on probe images, the fastest that agrees with float32."""

import pytest
import torch

from wsss_ray import precision
from wsss_ray.labeler import Labeler
from wsss_ray.precision import TOLERANCE, Agreement, Trial, choose

SAME = Agreement(cam_r=1.0, masks=1.0)


def test_the_fastest_precision_that_agrees_is_chosen():
    trials = [Trial("fp32", 0.010, SAME), Trial("bf16", 0.004, Agreement(0.9995, 0.995)),
              Trial("fp16", 0.003, Agreement(0.9999, 0.999))]
    assert choose(trials) == "fp16"


def test_a_fast_precision_whose_masks_differ_is_refused():
    trials = [Trial("fp32", 0.010, SAME), Trial("fp16", 0.003, Agreement(0.9999, 0.867)),   # masks differ
              Trial("bf16", 0.004, Agreement(0.95, 0.999))]                                  # CAMs differ
    assert choose(trials) == "fp32"
    assert choose(trials, Agreement(cam_r=0.9, masks=0.8)) == "fp16"


def test_float32_stays_when_it_is_the_fastest():
    assert choose([Trial("fp32", 0.002, SAME), Trial("bf16", 0.004, SAME)]) == "fp32"


def test_bf16_on_this_cpu_agrees_with_float32_within_the_tolerance():
    labeler = Labeler.from_spec("toyclip", "toyworld", precision="fp32")
    trials = {t.precision: t for t in precision.measure(labeler, ("bf16",), side=64)}
    assert trials["fp32"].agreement == SAME
    bf16 = trials["bf16"].agreement
    assert bf16.cam_r >= TOLERANCE.cam_r and bf16.masks >= TOLERANCE.masks, bf16
    assert bf16.cam_r < 1.0  # bf16 really ran: its CAMs are not float32's to the last bit
    assert labeler.precision == "fp32"  # measuring leaves the labeller's own precision alone


def test_auto_is_settled_by_measuring_only_off_a_cpu(monkeypatch):
    labeler = Labeler.from_spec("toyclip", "toyworld")
    assert labeler.precision == "auto"  # a CPU: bf16 when native, decided by autocast_dtype, not measured
    measured = [Trial("fp32", 0.01, SAME), Trial("bf16", 0.005, SAME), Trial("fp16", 0.004, Agreement(0.5, 0.5))]
    monkeypatch.setattr(precision, "measure", lambda labeler: measured)
    monkeypatch.setattr(type(labeler.method), "device", property(lambda self: torch.device("cuda")))
    assert labeler.settle_precision() == "bf16"
    assert labeler.precision == "bf16"
    labeler.precision = "fp16"  # a precision asked for by name is kept
    assert labeler.settle_precision() == "fp16"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_a_gpu_the_chosen_precision_agrees_with_float32():
    labeler = Labeler.from_spec("toyclip", "toyworld", device="cuda")
    trials = {t.precision: t for t in precision.measure(labeler, side=64)}
    chosen = trials[labeler.precision].agreement
    assert chosen.cam_r >= TOLERANCE.cam_r and chosen.masks >= TOLERANCE.masks


def test_a_candidate_that_cannot_run_here_is_skipped(monkeypatch):
    labeler = Labeler.from_spec("toyclip", "toyworld", precision="fp32")
    label = labeler.label

    def no_bf16(*args, **kwargs):
        if labeler.precision == "bf16":
            raise RuntimeError("\"addmm_impl_cpu_\" not implemented for 'BFloat16'")
        return label(*args, **kwargs)

    monkeypatch.setattr(labeler, "label", no_bf16)
    trials = precision.measure(labeler, ("bf16",), side=64, images=2)
    assert [t.precision for t in trials] == ["fp32"]
    assert choose(trials) == "fp32"
