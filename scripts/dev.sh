#!/usr/bin/env bash
# The two quick-start commands (README): `bash scripts/dev.sh demo` and `bash scripts/dev.sh test`.
# Both create .venv from the hash-pinned lock file on first use (again when the lock changes),
# then run the demo or the whole test suite. Extra arguments go to the demo or to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "ttft-router needs Python 3.11 or newer (found: $("$PYTHON" --version 2>&1))" >&2
  exit 1
}

stamp=.venv/.installed-$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "Installing into .venv from requirements.lock (hash-pinned)..." >&2
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes \
    --no-deps -r requirements.lock
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
    --no-build-isolation -e .
  rm -f .venv/.installed-*
  touch "$stamp"
fi

command="${1:-}"
shift || true
case "$command" in
  demo) exec .venv/bin/ttft-router demo "$@" ;;
  test) exec .venv/bin/python -m pytest "$@" ;;
  *) echo "usage: bash scripts/dev.sh demo|test [args...]" >&2; exit 2 ;;
esac
