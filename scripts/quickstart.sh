#!/usr/bin/env bash
# One command for a fresh machine: set up .venv, then run the quickstart pipeline
# (data -> tokenizer -> pre-training -> SFT -> DPO -> evaluation -> HF export) on this
# machine's CPU. Extra arguments are passed to `lmforge run` (e.g. overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
LMFORGE_BROWSER=0 bash scripts/setup.sh   # a pipeline needs no browser
# shellcheck disable=SC1091
. .venv/bin/activate
exec lmforge run examples/quickstart/pipeline.yaml "$@"
