"""The documentation: the site builds strictly, its reference is the code's, the README stays short."""

import argparse
import dataclasses
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = runpy.run_path(str(ROOT / "scripts" / "docs_reference.py"), run_name="docs_reference")


def test_the_site_builds_with_strict_links_and_references(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    flags = (tmp_path / "reference" / "flags" / "index.html").read_text()
    settings = (tmp_path / "reference" / "settings" / "index.html").read_text()
    api = (tmp_path / "reference" / "api" / "index.html").read_text()
    assert 'id="pseudolabel"' in flags and "--crf-backend" in flags and "--min-confidence" in flags
    assert 'id="post-crf"' in settings and "bilateral_sxy" in settings and 'id="excel"' in settings
    assert "wsss_ray.labeler.Labeler" in api and "write_pending" in api


def test_a_broken_link_fails_the_strict_build(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n[gone](nowhere.md)\n")
    (tmp_path / "mkdocs.yml").write_text("site_name: t\nstrict: true\n")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--site-dir", str(tmp_path / "site")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "nowhere.md" in done.stderr


@pytest.mark.parametrize("anchor,title,run,where", REFERENCE["COMMANDS"], ids=lambda v: str(v))
def test_the_flag_reference_has_every_flag_of_every_command(anchor, title, run, where):
    parser = REFERENCE["captured_parser"](REFERENCE["_entry"](*where))
    page = REFERENCE["flags_page"]()
    section = page.split(f"{{#{anchor}}}", 1)[1].split("\n## ", 1)[0]
    assert _options(parser) and [o for o in _options(parser) if f"`{o}`" not in section] == []


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """Every flag of a parser and of its sub-commands, but for help."""
    options = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            options += [o for sub in action.choices.values() for o in _options(sub)]
        elif action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction):
            options += action.option_strings
    return options


def test_the_settings_reference_lists_every_setting_with_its_default():
    from wsss_ray.config import CrfConfig, LabelJobConfig
    from wsss_ray.config.methods import ExcelConfig

    page = REFERENCE["settings_page"]()
    for cls, anchor in ((LabelJobConfig, "label-job"), (CrfConfig, "post-crf"), (ExcelConfig, "excel")):
        section = page.split(f"{{#{anchor}}}", 1)[1].split("\n## ", 1)[0]
        names = [f.name for f in dataclasses.fields(cls) if f.name != "method_config"]
        assert [n for n in names if f"| `{n}` |" not in section] == []
    assert "| `bilateral_sxy` | `float` | `67.0` |" in page
    assert "| `max_side` | `int \\| None` | `640` | the CRF runs on the image shrunk to this long side" in page


def test_field_comments_are_the_comment_beside_each_field_and_its_continuation_lines():
    @dataclasses.dataclass
    class Example:
        plain: int = 1
        noted: str = "a"   # what it is
        long: float = 2.0  # first line,
                           # and its continuation
        after: bool = True

    assert REFERENCE["field_comments"](Example) == {"noted": "what it is",
                                                    "long": "first line, and its continuation"}


def test_the_output_reference_is_the_schema_with_a_description_for_every_column():
    from wsss_ray.store import OUTPUT_SCHEMA

    page = REFERENCE["output_page"]()
    for field in OUTPUT_SCHEMA:
        description = (field.metadata or {}).get(b"description", b"").decode()
        assert description and f"| `{field.name}` |" in page


def test_the_readme_is_short_and_opens_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == ["make run", "make test"]
    assert readme.index("```bash") < readme.index("## ")


def test_the_design_documents_every_output_column_and_no_other():
    from wsss_ray.store import OUTPUT_SCHEMA

    design = (ROOT / "docs" / "DESIGN.md").read_text()
    table = design.split("Output: a directory of Parquet files", 1)[1].split("\n\n", 2)[1]
    named = {name.strip() for row in table.splitlines()[2:] for name in row.split("|")[1].split(",")}
    run_metadata = {"labelset", "model", "method", "run_id"}  # "plus run metadata columns" below the table
    assert named | run_metadata == set(OUTPUT_SCHEMA.names)
