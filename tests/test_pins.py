"""Both environments hold exactly their pinned sets (requirements/*.txt), so a new release on
the registry cannot change what `make test` runs against; scripts/check_pins.py decides."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wsss_ray.testing.review_tools import review_python

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "scripts" / "check_pins.py"


def _check(python: Path | str, lock: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), str(CHECK), str(ROOT / "requirements" / lock)], capture_output=True,
                          text=True, timeout=120)


def test_the_main_environment_is_its_pinned_set():
    done = _check(sys.executable, "main.txt")
    assert done.returncode == 0, done.stderr


def test_the_review_environment_is_its_pinned_set():
    python = review_python()
    if python is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs the review tools; `make test` installs them (`make review-tools`)")
        pytest.skip("the review tools are not installed; run `make review-tools`")
    done = _check(python, "review.txt")
    assert done.returncode == 0, done.stderr


def test_a_drifted_install_is_reported_package_by_package(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("# a comment\nnumpy==0.0.1\nno-such-package==1.0\n")
    done = subprocess.run([sys.executable, str(CHECK), str(lock)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "numpy: pinned 0.0.1, installed " in done.stderr
    assert "no-such-package: pinned 1.0, installed nothing" in done.stderr
    assert "torch: installed 2.14.1, not pinned" in done.stderr


def test_a_lock_line_that_is_not_a_pin_is_refused(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("numpy>=2\n")
    done = subprocess.run([sys.executable, str(CHECK), str(lock)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "is not a name==version pin" in done.stderr
