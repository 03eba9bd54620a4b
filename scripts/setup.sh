#!/usr/bin/env bash
# Create .venv in the checkout and install wsss-ray into it with exactly the pinned set
# (requirements/main.txt, `make lock` regenerates it). Idempotent: a second run only checks
# that the install is current and returns within seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pinned-venv.sh

VENV=.venv
LOCK=requirements/main.txt
STAMP="$VENV/.wsss-ray-installed"

# Reinstall only when the package's metadata or its pins changed since the last install.
want="$(cat pyproject.toml "$LOCK" | sha256sum | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0  # current: nothing to say
fi
SECONDS=0
pinned_venv "$VENV" "$LOCK" -e .   # torch comes from the machine's wheel cache, like every pinned package
echo "$want" > "$STAMP"
echo "[setup] wsss-ray installed in $VENV in $SECONDS s"
