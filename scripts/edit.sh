#!/usr/bin/env bash
# Sets up LMM Edit beside a ComfyUI checkout and runs one edit through ComfyUI, headless.
#   COMFYUI_PATH=/path/to/ComfyUI bash scripts/edit.sh [--image in.png] [--instruction "..."] [--steps N]
# Without real model weights it runs a self-check on tiny random weights and says what to download.
# PYTHON=/path/to/python uses an existing environment (e.g. ComfyUI's own venv) instead of .venv.
# TORCH_SPEC overrides the torch install of a new .venv (default: the CPU-capable PyPI trio below).
set -euo pipefail
pack="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ -z "${COMFYUI_PATH:-}" ] && [ "$(basename "$(dirname "$pack")")" = "custom_nodes" ]; then
  COMFYUI_PATH="$(dirname "$(dirname "$pack")")"
fi
if [ -z "${COMFYUI_PATH:-}" ] || [ ! -f "$COMFYUI_PATH/nodes.py" ]; then
  echo "error: set COMFYUI_PATH to your ComfyUI folder (the one with main.py and nodes.py)." >&2
  echo "       No ComfyUI yet? pip install comfy-cli && comfy --workspace ~/ComfyUI install" >&2
  exit 2
fi
export COMFYUI_PATH

if [ -z "${PYTHON:-}" ]; then
  if [ ! -x "$pack/.venv/bin/python" ]; then
    echo "== creating $pack/.venv"
    python3 -m venv "$pack/.venv"
  fi
  PYTHON="$pack/.venv/bin/python"
  if ! "$PYTHON" -c "import torch, torchvision" 2>/dev/null; then
    echo "== installing torch for ComfyUI (${TORCH_SPEC:-torch==2.9.1 torchvision==0.24.1 torchaudio==2.9.1})"
    # shellcheck disable=SC2086
    "$PYTHON" -m pip install --quiet ${TORCH_SPEC:-torch==2.9.1 torchvision==0.24.1 torchaudio==2.9.1}
  fi
fi

echo "== installing ComfyUI's requirements and LMM Edit"
"$PYTHON" -m pip install --quiet -r "$COMFYUI_PATH/requirements.txt"
"$PYTHON" -m pip install --quiet -e "$pack[cli]"  # comfy-cli converts the example workflow

echo "== running the edit"
cd "$pack/.."
exec "$PYTHON" -m lmm_edit edit "$@"
