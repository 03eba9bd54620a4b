"""The documentation's reference pages, generated from the code at every `make docs`.

Run by mkdocs-gen-files (`mkdocs.yml`), so the pages exist only in the built site and cannot
drift from what they describe:

- reference/flags.md     every job's flags, read from its argparse parser
- reference/settings.md  every settings section, read from its dataclass (types, defaults, the
                         comment beside each field, the class docstring)
- reference/output.md    the output's columns, read from ``OUTPUT_SCHEMA`` and its field descriptions

The Python API page (docs/reference/api.md) is mkdocstrings' own.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import runpy
import textwrap
import tokenize
import typing
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent

# (heading id, title, how to run it, where its parser is built)
COMMANDS = [
    ("pseudolabel", "jobs/pseudolabel.py", "python jobs/pseudolabel.py", ("jobs/pseudolabel.py", "parse")),
    ("learn-prompts", "jobs/learn_prompts.py", "python jobs/learn_prompts.py", ("jobs/learn_prompts.py", "parse")),
    ("train", "jobs/train.py", "python jobs/train.py", ("jobs/train.py", "parse")),
    ("predict", "jobs/predict.py", "python jobs/predict.py", ("jobs/predict.py", "parse")),
    ("tune", "jobs/tune.py", "python jobs/tune.py", ("jobs/tune.py", "parse")),
    ("export", "wsss_ray.export", "python -m wsss_ray.export", ("wsss_ray.export", "main")),
    ("review", "wsss_ray.review", "python -m wsss_ray.review", ("wsss_ray.review", "main")),
    ("tracking", "wsss_ray.tracking", "python -m wsss_ray.tracking", ("wsss_ray.tracking", "main")),
]


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def captured_parser(entry: Callable[[list[str]], Any]) -> argparse.ArgumentParser:
    """The parser `entry` builds: it is stopped at its first parse, before anything runs."""
    original = argparse.ArgumentParser.parse_known_args

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    argparse.ArgumentParser.parse_known_args = capture
    try:
        entry([])
    except _Captured as done:
        return done.parser
    finally:
        argparse.ArgumentParser.parse_known_args = original
    raise RuntimeError(f"{entry} built no argparse parser")


def _entry(where: str, name: str) -> Callable:
    if where.endswith(".py"):
        return runpy.run_path(str(ROOT / where), run_name="wsss_ray_docs")[name]
    import importlib

    return getattr(importlib.import_module(where), name)


def cell(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return (str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\n", " "))


def _flag_name(action: argparse.Action) -> str:
    names = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
    if action.nargs == 0:
        return names
    if action.choices:
        return f"{names} {{{','.join(map(str, action.choices))}}}"
    metavar = action.metavar or (action.dest.upper().split(".")[-1] if action.option_strings else None)
    return f"{names} `{metavar}`" if metavar and action.option_strings else names


def parser_markdown(parser: argparse.ArgumentParser, run: str, level: int) -> Iterator[str]:
    """A parser's usage (as `run`) and a table of its arguments; each sub-command under its own heading."""
    parser.prog = run
    usage = parser.format_usage().removeprefix("usage: ").strip()
    yield f"```\n{textwrap.dedent(usage)}\n```\n"
    rows, subcommands = [], None
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            subcommands = action
        elif action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction):
            rows.append(f"| {_flag_name(action)} | {cell(action.help or '')} |")
    if rows:
        yield "| flag | what it sets |\n|---|---|\n" + "\n".join(rows) + "\n"
    if subcommands:
        helps = {a.dest: a.help for a in subcommands._choices_actions}
        for name, sub in subcommands.choices.items():
            yield f"{'#' * level} `{name}`\n\n{cell(helps.get(name) or '')}\n"
            yield from parser_markdown(sub, f"{run} {name}", level + 1)


def flags_page() -> str:
    parts = ["# Job flags\n",
             "Every job's and tool's flags, read from its parser when this site was built (`make docs`), "
             "so they match `--help`. Flags set the settings of the same dotted name "
             "([settings](settings.md)); a flag given beats `--config`, which beats the model's "
             "`label_config.yaml`, which beats the defaults.\n"]
    for anchor, title, run, (where, name) in COMMANDS:
        parser = captured_parser(_entry(where, name))
        description = (parser.description or "").strip().split("\n\n")[0]
        parts.append(f"## `{title}` {{#{anchor}}}\n\n{description}\n\n`{run} --help` prints this.\n")
        parts.extend(parser_markdown(parser, run, 3))
    return "\n".join(parts)


def field_comments(cls: type) -> dict[str, str]:
    """The comment beside each field of a dataclass (and the comment lines that continue it)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[str, list[str]] = {}
    current, column = None, None
    names = set(getattr(cls, "__annotations__", {}))
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and tok.string in names:
            current, column = tok.string, None
        elif tok.type == tokenize.COMMENT and current:
            if column is None or tok.start[1] == column:
                comments.setdefault(current, []).append(tok.string.lstrip("#").strip())
                column = tok.start[1]
        elif tok.type == tokenize.NAME and tok.start[1] == 4:
            current = None
    return {k: " ".join(v) for k, v in comments.items()}


def _type_text(tp: Any) -> str:
    text = tp if isinstance(tp, str) else tp.__name__ if isinstance(tp, type) else str(tp)
    return text.replace("typing.", "")


def _rst(text: str) -> str:
    """A docstring's reStructuredText roles and literals as Markdown code."""
    import re

    text = re.sub(r":(?:class|func|meth|data|attr|mod):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def flag_helps(entry: Callable) -> dict[str, str]:
    """A job's flags' help texts by the setting they set (the fields without a comment of their own)."""
    import re

    return {a.dest: re.sub(r" \(default: [^)]*\)$", "", a.help)
            for a in captured_parser(entry)._actions if a.help and a.help != argparse.SUPPRESS}


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _value_text(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(map(repr, value)) + "]"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "{}"
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


def settings_section(cls: type, name: str, anchor: str, title: str, note: str = "",
                     helps: dict[str, str] | None = None) -> Iterator[str]:
    """One section's table; its nested dataclasses follow as sections of their own. A field with no
    comment of its own is described by the help of the flag that sets it (`helps`, by dotted name)."""
    hints = typing.get_type_hints(cls)
    helps = helps or {}
    comments = {f.name: helps.get(f"{name}.{f.name}" if name else f.name, "") for f in dataclasses.fields(cls)}
    for base in reversed(cls.__mro__):  # a field's comment is where the field is declared, maybe a base class
        if dataclasses.is_dataclass(base):
            comments.update({k: v for k, v in field_comments(base).items() if v})
    doc = _rst(inspect.cleandoc(cls.__doc__ or ""))
    rows, nested = [], []
    for f in dataclasses.fields(cls):
        if f.name == "method_config":
            continue
        value = _default(f)
        if dataclasses.is_dataclass(value):
            nested.append((f.name, type(value)))
            rows.append(f"| `{f.name}` | section | | [{name + '.' if name else ''}{f.name}](#"
                        f"{(name + '-' if name else '') + f.name}) |")
            continue
        rows.append(f"| `{f.name}` | `{cell(_type_text(hints.get(f.name, f.type)))}` | "
                    f"`{cell(_value_text(value))}` | {cell(comments.get(f.name, ''))} |")
    yield f"## {title} {{#{anchor}}}\n\n{doc}\n\n{note}\n"
    yield "| setting | type | default | what it is |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    for field_name, sub in nested:
        dotted = f"{name}.{field_name}" if name else field_name
        yield from settings_section(sub, dotted, dotted.replace(".", "-"), f"`{dotted}`", helps=helps)


def settings_page() -> str:
    from wsss_ray.config import LabelJobConfig, LearnPromptsConfig, PredictConfig, SweepConfig, TrainConfig
    from wsss_ray.config.methods import method_config_class, method_sections

    parts = ["# Settings\n",
             "Every setting, read from its dataclass in `wsss_ray/config/` when this site was built. "
             "A setting's dotted name is the same in a `--config` YAML file, a model's "
             "`label_config.yaml`, MLflow params and sweep spaces (`post.crf.iters`); "
             "[how the layers combine](../concepts/settings.md).\n"]
    jobs = [("label-job", "The labelling job (`jobs/pseudolabel.py`)", LabelJobConfig, "pseudolabel"),
            ("learn-prompts-job", "Prompt learning (`jobs/learn_prompts.py`)", LearnPromptsConfig, "learn_prompts"),
            ("train-job", "Training (`jobs/train.py`)", TrainConfig, "train"),
            ("predict-job", "Prediction (`jobs/predict.py`)", PredictConfig, "predict"),
            ("tune-job", "Sweeps (`jobs/tune.py`)", SweepConfig, "tune")]
    for anchor, title, cls, job in jobs:
        helps = flag_helps(_entry(f"jobs/{job}.py", "parse"))
        parts.extend(settings_section(cls, "", anchor, title, helps=helps))
        if cls is LabelJobConfig:
            for key, method in sorted(method_sections().items()):
                parts.extend(settings_section(method_config_class(method), key, key, f"`{key}`",
                                              f"The settings of `--method {method}`, under `{key}:`.", helps))
    return "\n".join(parts)


def output_page() -> str:
    from wsss_ray.store.output import OUTPUT_SCHEMA

    rows = [f"| `{f.name}` | `{cell(f.type)}` | {cell((f.metadata or {}).get(b'description', b'').decode())} |"
            for f in OUTPUT_SCHEMA]
    return "\n".join([
        "# Output columns\n",
        "A labelling job's (and prediction's) output is a folder of Parquet files, one row per input item, "
        "read here from `wsss_ray.store.output.OUTPUT_SCHEMA` when this site was built. The Parquet "
        "files carry the same descriptions in their schema's field metadata. Names in the folder that "
        "start with `_` or `.` are not rows; the [design](../DESIGN.md#data-contracts-other-tools-and-the-"
        "tests-rely-on-these-exactly) lists them.\n",
        "| column | Arrow type | what it holds |\n|---|---|---|\n" + "\n".join(rows) + "\n"])


def main() -> None:
    import mkdocs_gen_files

    for path, page in (("reference/flags.md", flags_page), ("reference/settings.md", settings_page),
                       ("reference/output.md", output_page)):
        with mkdocs_gen_files.open(path, "w") as f:
            f.write(page())
        mkdocs_gen_files.set_edit_path(path, "scripts/docs_reference.py")


if __name__ in ("__main__", "<run_path>"):
    main()
