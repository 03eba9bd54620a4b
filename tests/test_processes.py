"""The servers tests start: one that dies at start fails with its own last lines, and the
teardown never raises over it."""

import sys

import pytest

from wsss_ray.testing.loopback import free_port
from wsss_ray.testing.processes import ServerFailed, http_ok, kill_tree, server

DIES = "import sys; print('starting'); print(\"TypeError: Unknown option 'send_default_pii'\", file=sys.stderr); sys.exit(3)"


def test_a_server_that_dies_at_start_fails_with_its_last_lines(tmp_path):
    with pytest.raises(ServerFailed) as failed:
        with server([sys.executable, "-c", DIES], lambda: False, tmp_path / "s.log", "the server"):
            pytest.fail("a server that exited must not be yielded")
    message = str(failed.value)
    assert "the server exited with status 3" in message
    assert "Unknown option 'send_default_pii'" in message and "starting" in message


def test_a_server_that_never_gets_ready_times_out_with_its_log(tmp_path):
    sleeper = [sys.executable, "-c", "import time; print('still waiting', flush=True); time.sleep(60)"]
    with pytest.raises(ServerFailed, match="not ready after 1 s(.|\n)*still waiting"):
        with server(sleeper, lambda: False, tmp_path / "s.log", "the server", timeout=1):
            pass


def test_a_ready_server_is_served_and_stopped_even_if_it_died_meanwhile(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    with server(cmd, lambda: http_ok(url), tmp_path / "s.log", "http.server", timeout=60) as proc:
        assert http_ok(url)
        kill_tree(proc)  # gone before the teardown: it must not raise
    assert proc.returncode is not None and not http_ok(url)
