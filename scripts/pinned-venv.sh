# Sourced by setup.sh and setup-review-tools.sh: `pinned_venv VENV LOCK [PIP_ARGS...]` makes the
# virtualenv VENV hold exactly the pinned set LOCK (requirements/*.txt), then runs
# `pip install --no-deps PIP_ARGS` there when given (the project itself); an environment that
# still differs from LOCK afterwards (a package pinned no more, or changed by hand) is recreated.
# Every step prints a line when it starts and its time when it ends, and a line every
# $STEP_EVERY seconds while it runs, so an install is never silent for long.
PYTHON="${PYTHON:-python3}"
STEP_EVERY="${STEP_EVERY:-10}"
STEP_TAG="${STEP_TAG:-setup}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

# step TAG WHAT COMMAND...: run COMMAND, saying what it does while it does it.
step() {
  local tag="$1" what="$2" start=$SECONDS next="$STEP_EVERY" pid status
  shift 2
  echo "[$tag] $what ..."
  "$@" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (( SECONDS - start >= next )) && kill -0 "$pid" 2>/dev/null; then
      echo "[$tag]   still $what ($((SECONDS - start)) s)"
      next=$((next + STEP_EVERY))
    fi
  done
  wait "$pid" && status=0 || status=$?
  if (( status != 0 )); then
    echo "[$tag] $what failed (exit $status, after $((SECONDS - start)) s)" >&2
    return "$status"
  fi
  echo "[$tag] $what: done in $((SECONDS - start)) s"
}

# pip, quiet, without its notes about configured local index folders absent on this machine.
_pip() {
  local venv="$1"
  shift
  "$venv/bin/pip" install --quiet "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

_pinned_install() {
  local venv="$1" lock="$2" tag="$STEP_TAG"
  shift 2
  [[ -x "$venv/bin/python" ]] || step "$tag" "creating the virtualenv $venv" "$PYTHON" -m venv "$venv"
  # torch (several GB) comes first and alone: pip takes it from the machine's wheel cache.
  local torch_pins
  torch_pins=$(grep -E '^(torch|torchvision)==' "$lock" || true)
  if [[ -n "$torch_pins" ]]; then
    # shellcheck disable=SC2086
    step "$tag" "installing $(echo $torch_pins) from the local wheel cache" _pip "$venv" $torch_pins
  fi
  step "$tag" "installing the $(grep -cE '^[A-Za-z0-9]' "$lock") pinned packages of $lock" _pip "$venv" -r "$lock"
  if [[ $# -gt 0 ]]; then
    step "$tag" "installing the project ($*)" _pip "$venv" --no-deps "$@"
  fi
}

pinned_venv() {
  local venv="$1" lock="$2"
  _pinned_install "$@"
  if ! "$venv/bin/python" scripts/check_pins.py "$lock" >/dev/null 2>&1; then
    echo "[$STEP_TAG] $venv differs from $lock; recreating it"
    rm -rf "$venv"
    _pinned_install "$@"
    "$venv/bin/python" scripts/check_pins.py "$lock"
  fi
}
