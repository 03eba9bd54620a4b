"""The one known-harmless Ray error line is dropped from stderr, and nothing else is."""

import subprocess
import sys

SCRIPT = r"""
import os, sys
from wsss_ray.ray_compat import quiet_known_ray_errors
with quiet_known_ray_errors():
    os.write(2, b"[E core_worker.cc] Actor X has constructor arguments in the object store and max_restarts > 0.\n")
    os.write(2, b"a real error line\n")
    print("from python", file=sys.stderr)
    os.write(2, b"partial line without newline")
print("after", file=sys.stderr)
"""


def test_quiet_known_ray_errors_drops_only_the_known_line():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert out.stderr == "a real error line\nfrom python\npartial line without newlineafter\n"
