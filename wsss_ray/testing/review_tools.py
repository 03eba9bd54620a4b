"""The review tools' own environment (``make review-tools``: .venv-review) and a real Label
Studio server on loopback, for the round-trip tests and the screenshots in docs/images/."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

import requests

from wsss_ray.testing.loopback import free_port
from wsss_ray.testing.processes import http_ok, server

REVIEW_VENV = Path(__file__).resolve().parents[2] / ".venv-review"
TOKEN = "0123456789abcdef0123456789abcdef01234567"  # the loopback server's API token, set at its first start
USER, PASSWORD = "review@example.com", "review-pass-1"


def review_python() -> Path | None:
    """The review environment's Python, or None when ``make review-tools`` has not run."""
    python = REVIEW_VENV / "bin" / "python"
    return python if python.is_file() else None


def run_in_tools(code: str, *args: str, cwd: Path | None = None, timeout: float = 600) -> str:
    """Run `code` in the review environment; its stdout (a failure raises with its stderr)."""
    python = review_python()
    if python is None:
        raise RuntimeError("the review tools are not installed; run `make review-tools`")
    env = {**os.environ, "FIFTYONE_DATABASE_VALIDATION": "false", "FIFTYONE_DO_NOT_TRACK": "true"}
    if cwd is not None:  # FiftyOne's database lives with the test, not in the home folder
        env["FIFTYONE_DATABASE_DIR"] = str(cwd / "fiftyone-db")
    done = subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=env)
    if done.returncode:
        raise RuntimeError(f"the review tools failed:\n{done.stderr[-3000:]}")
    return done.stdout


class LabelStudio:
    """A client of the loopback server's REST API (token authentication)."""

    def __init__(self, url: str):
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {TOKEN}"

    def call(self, method: str, path: str, **kwargs):
        response = self.session.request(method, self.url + path, timeout=120, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None


@contextlib.contextmanager
def label_studio_server(data_dir: Path, document_root: Path, start_timeout: float = 600) -> Iterator[LabelStudio]:
    """Label Studio from the review environment on a free loopback port, serving local files
    under `document_root`, with a user and an API token; stopped on exit."""
    label_studio = REVIEW_VENV / "bin" / "label-studio"
    port = free_port()
    env = {**os.environ, "LATEST_VERSION_CHECK": "false", "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
           "LABEL_STUDIO_USERNAME": USER, "LABEL_STUDIO_PASSWORD": PASSWORD, "LABEL_STUDIO_USER_TOKEN": TOKEN,
           "LOCAL_FILES_SERVING_ENABLED": "true", "LOCAL_FILES_DOCUMENT_ROOT": str(document_root)}
    cmd = [str(label_studio), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(data_dir)]
    url = f"http://127.0.0.1:{port}"
    with server(cmd, lambda: http_ok(url + "/health"), data_dir.parent / "label-studio.log", "Label Studio",
                env=env, timeout=start_timeout):
        yield LabelStudio(url)
