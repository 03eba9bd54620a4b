#!/usr/bin/env bash
# Create .venv-review with Label Studio, FiftyOne and pycocotools (scripts/review-tools.txt):
# where the exported tasks and datasets are opened, and what the round-trip tests use.
# Idempotent: a second run only checks the stamp. About 2 minutes the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv-review
STAMP="$VENV/.installed"
want="$(sha256sum scripts/review-tools.txt | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/pip" install --quiet -r scripts/review-tools.txt \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
echo "$want" > "$STAMP"
echo "review tools installed in $VENV"
