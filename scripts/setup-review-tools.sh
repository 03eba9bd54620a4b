#!/usr/bin/env bash
# Create .venv-review with Label Studio, FiftyOne and pycocotools at exactly the pinned set
# (requirements/review.txt, resolved from requirements/review.in by `make lock`): where the
# exported tasks and datasets are opened, and what the round-trip tests use.
# Idempotent: a second run only checks the stamp. About 2 minutes the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv-review
LOCK=requirements/review.txt
STAMP="$VENV/.installed"
want="$(sha256sum "$LOCK" | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
install() {
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet -r "$LOCK" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

install
if ! "$VENV/bin/python" scripts/check_pins.py "$LOCK" >/dev/null 2>&1; then
  echo "$VENV differs from $LOCK; recreating it"
  rm -rf "$VENV"
  install
  "$VENV/bin/python" scripts/check_pins.py "$LOCK"
fi
echo "$want" > "$STAMP"
echo "review tools installed in $VENV"
