#!/usr/bin/env bash
# Create (or reuse) .venv and install lmforge with its test dependencies (and the megatron extra).
# torch is pinned to the CPU build through constraints/dev.txt (the package itself declares a
# normal range). Set LMFORGE_PYTHON to choose the interpreter (default: python3.11, else python3).
#
# Also installs Debian's chromium when it is missing (the run report's browser test renders the
# report in it; CI must run that test): with apt-get, as root or through password-less sudo.
# LMFORGE_BROWSER=0 skips it (scripts/quickstart.sh does: running a pipeline needs no browser).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${LMFORGE_PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.lmforge-installed
# the version is part of the installed metadata (plugin versions, stage keys): reinstall on a bump
want="$(cat pyproject.toml constraints/dev.txt core/lmforge/_version.py | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python -m pip install --quiet --upgrade pip
  # '.[megatron]': the Megatron backend's tests run on CPU in CI (about 10 s more to install)
  python -m pip install --quiet -c constraints/dev.txt -e '.[test,megatron]'
  echo "$want" > "$stamp"
fi

install_chromium() {
  if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    return 0
  fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo="sudo -n"
    else
      echo "setup: chromium is not installed and apt-get needs root; the report's browser" \
           "test is skipped outside CI (install it with: sudo apt-get install chromium)" >&2
      return 0
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: chromium is not installed and there is no apt-get; install Chromium so that" \
         "the report's browser test can run" >&2
    return 0
  fi
  echo "setup: installing chromium with apt-get (under a minute)" >&2
  # A lock held by another apt (unattended upgrades) is waited for, not an error; a failed
  # download is tried again.
  local apt=($sudo env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600
             -o Acquire::Retries=3)
  local try
  for try in 1 2 3; do
    if "${apt[@]}" update >/dev/null &&
       "${apt[@]}" install -y --no-install-recommends chromium fonts-dejavu-core >/dev/null; then
      return 0
    fi
    echo "setup: apt-get failed (try $try of 3)" >&2
    sleep $((try * 5))
  done
  echo "setup: could not install chromium; the report's browser test fails in CI without it" >&2
  return 1
}
if [ "${LMFORGE_BROWSER:-1}" != 0 ]; then
  install_chromium
fi
