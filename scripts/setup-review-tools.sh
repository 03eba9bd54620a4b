#!/usr/bin/env bash
# Create .venv-review with Label Studio, FiftyOne and pycocotools at exactly the pinned set
# (requirements/review.txt, resolved from requirements/review.in by `make lock`): where the
# exported tasks and datasets are opened, and what the round-trip tests use.
# Idempotent: a second run only checks the stamp. About 2 minutes the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
STEP_TAG=review-tools
source scripts/pinned-venv.sh

VENV=.venv-review
LOCK=requirements/review.txt
STAMP="$VENV/.installed"
want="$(sha256sum "$LOCK" | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0  # current: nothing to say
fi
SECONDS=0
pinned_venv "$VENV" "$LOCK"
echo "$want" > "$STAMP"
echo "[review-tools] the review tools installed in $VENV in $SECONDS s"
