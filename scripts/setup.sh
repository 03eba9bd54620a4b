#!/usr/bin/env bash
# Create .venv in the checkout and install wsss-ray into it with exactly the pinned set
# (requirements/main.txt, `make lock` regenerates it). Idempotent: a second run only checks
# that the install is current and returns within seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv
LOCK=requirements/main.txt
STAMP="$VENV/.wsss-ray-installed"

# Reinstall only when the package's metadata or its pins changed since the last install.
want="$(cat pyproject.toml "$LOCK" | sha256sum | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
pip_install() {
  # Drop pip's notes about configured local index folders that do not exist on this machine.
  "$VENV/bin/pip" install --quiet "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
install() {
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
  pip_install -r "$LOCK"  # torch comes from the machine's wheel cache, like every pinned package
  pip_install --no-deps -e .
}

install
if ! "$VENV/bin/python" scripts/check_pins.py "$LOCK" >/dev/null 2>&1; then
  # Something installed before is no longer pinned (or was changed by hand): start clean.
  echo "$VENV differs from $LOCK; recreating it"
  rm -rf "$VENV"
  install
  "$VENV/bin/python" scripts/check_pins.py "$LOCK"
fi
echo "$want" > "$STAMP"
echo "wsss-ray installed in $VENV"
