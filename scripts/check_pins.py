"""Check that the running Python's installed packages are exactly a lock file's.

    .venv/bin/python scripts/check_pins.py requirements/main.txt

Exit 0 when every `name==version` line of the lock is installed at that version and nothing
else is (pip, setuptools and wheel aside, as `pip freeze` leaves them out, and the project
itself); exit 1 listing each difference, so CI fails when an install drifted from the pins.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

TOOLS = {"pip", "setuptools", "wheel", "distribute"}
PROJECT = "wsss-ray"


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(lock: Path) -> dict[str, str]:
    """The lock file's `name==version` lines (comments and blank lines skipped)."""
    pins = {}
    for number, line in enumerate(lock.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise SystemExit(f"{lock}:{number}: '{line}' is not a name==version pin; regenerate it with `make lock`")
        pins[canonical(name)] = version.strip()
    return pins


def installed() -> dict[str, str]:
    """Every distribution this interpreter sees, by canonical name."""
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()
            if canonical(d.metadata["Name"]) not in TOOLS | {PROJECT}}


def differences(pins: dict[str, str], have: dict[str, str]) -> list[str]:
    """One line per package that is missing, extra, or at another version."""
    lines = [f"{name}: pinned {pins[name]}, installed {have.get(name, 'nothing')}"
             for name in sorted(pins) if have.get(name) != pins[name]]
    return lines + [f"{name}: installed {have[name]}, not pinned" for name in sorted(set(have) - set(pins))]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    lock = Path(argv[0])
    diff = differences(pinned(lock), installed())
    if diff:
        print(f"{sys.prefix} differs from {lock} (run `make setup` / `make review-tools` to reinstall it, "
              f"or `make lock` if the pins should change):", *diff, sep="\n  ", file=sys.stderr)
        return 1
    print(f"{sys.prefix} matches {lock}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
