"""A job's command line: its flags parsed into its settings, with ``--config`` and ``--mlflow-uri``."""

from __future__ import annotations

import argparse
from typing import Any, Callable, Mapping

from wsss_ray.config.layers import resolve


def parse_settings(parser: argparse.ArgumentParser, argv: list[str] | None,
                   settings: type | Callable[[Mapping, Any], Any], tracked: bool = True,
                   config_help: str = "YAML of settings (flag names with underscores); flags given override it"):
    """Parse a job's flags (adding ``--config`` and ``--mlflow-uri``) into (settings, mlflow_uri).

    Every other flag defaults to None so that only the flags given override the
    ``--config`` file; flag destinations may be dotted names (``clip_es.caa``).
    `settings` is the job's settings class (resolved by :func:`~wsss_ray.config.layers.resolve`)
    or a function ``(flags, config_file) -> settings``; its errors exit like argparse's
    own, with the one-sentence message.
    """
    parser.add_argument("--config", help=config_help)
    if tracked:
        parser.add_argument("--mlflow-uri", help="MLflow tracking URI (default: sqlite store outputs/mlflow.db)")
    a = vars(parser.parse_args(argv))
    config_file, mlflow_uri = a.pop("config"), a.pop("mlflow_uri", None)
    flags = {k: v for k, v in a.items() if v is not None}
    try:
        if isinstance(settings, type):
            return resolve(settings, flags, config_file), mlflow_uri
        return settings(flags, config_file), mlflow_uri
    except (OSError, ValueError, TypeError) as e:
        parser.error(str(e))
