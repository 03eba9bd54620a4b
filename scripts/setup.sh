#!/usr/bin/env bash
# Create .venv in the checkout and install wsss-ray into it. Idempotent: a second
# run only checks that the install is current and returns within seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.wsss-ray-installed"

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi

# Reinstall only when the dependency list changed since the last install.
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
pip_install() {
  # Drop pip's notes about configured local index folders that do not exist on this machine.
  "$VENV/bin/pip" install --quiet "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
# torch first, from the machine's wheel cache, so nothing else pulls a different build.
pip_install "torch==2.14.1" "torchvision==0.29.1"
pip_install -e ".[test,review]"
echo "$want" > "$STAMP"
echo "wsss-ray installed in $VENV"
