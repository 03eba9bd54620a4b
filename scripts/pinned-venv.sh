# Sourced by setup.sh and setup-review-tools.sh: `pinned_venv VENV LOCK [PIP_ARGS...]` makes the
# virtualenv VENV hold exactly the pinned set LOCK (requirements/*.txt), then runs
# `pip install --no-deps PIP_ARGS` there when given (the project itself); an environment that
# still differs from LOCK afterwards (a package pinned no more, or changed by hand) is recreated.
PYTHON="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

_pinned_install() {
  local venv="$1" lock="$2"
  shift 2
  [[ -x "$venv/bin/python" ]] || "$PYTHON" -m venv "$venv"
  # Drop pip's notes about configured local index folders that do not exist on this machine.
  "$venv/bin/pip" install --quiet -r "$lock" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  if [[ $# -gt 0 ]]; then
    "$venv/bin/pip" install --quiet --no-deps "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  fi
}

pinned_venv() {
  local venv="$1" lock="$2"
  _pinned_install "$@"
  if ! "$venv/bin/python" scripts/check_pins.py "$lock" >/dev/null 2>&1; then
    echo "$venv differs from $lock; recreating it"
    rm -rf "$venv"
    _pinned_install "$@"
    "$venv/bin/python" scripts/check_pins.py "$lock"
  fi
}
