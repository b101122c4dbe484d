#!/usr/bin/env bash
# Installs LMM Edit with its test extras into .venv-test and runs the test suite (README, Tests).
#   bash scripts/test.sh [pytest arguments]
# Integration tests run when COMFYUI_PATH points at a ComfyUI checkout whose requirements
# are installed in the same Python (see README, "Tests"); otherwise they are skipped.
# PYTHON=/path/to/python uses that environment instead of .venv-test.
set -euo pipefail
pack="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  [ -x "$pack/.venv-test/bin/python" ] || python3 -m venv "$pack/.venv-test"
  PYTHON="$pack/.venv-test/bin/python"
  # torch 2.13.0: a quick CPU build where a local wheel exists; any torch >= 2.5 works.
  "$PYTHON" -c "import torch" 2>/dev/null || "$PYTHON" -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
fi
# With ComfyUI the integration and browser suites also need comfy-cli (edit/batch commands), Ray and playwright.
extras="test"
[ -z "${COMFYUI_PATH:-}" ] || extras="test,cli,scale,browser"
"$PYTHON" -m pip install --quiet -e "$pack[$extras]"
cd "$pack"
exec "$PYTHON" -m pytest "$@"
