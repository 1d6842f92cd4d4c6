#!/usr/bin/env bash
# Create (or reuse) .venv and install lmforge with its test dependencies.
# torch is pinned to the CPU build through constraints/dev.txt (the package itself declares a
# normal range). Set LMFORGE_PYTHON to choose the interpreter (default: python3.11, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${LMFORGE_PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.lmforge-installed
want="$(cat pyproject.toml constraints/dev.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet -c constraints/dev.txt -e '.[test]'
  echo "$want" > "$stamp"
fi
