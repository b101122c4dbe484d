#!/usr/bin/env bash
# Every GPU check of the pack in one process tree, under 8 minutes on one H100/H200, with one summary file of
# figures ($OUT/gpu_checks_summary.txt, or benchmarks/gpu_checks_out/ without $OUT):
#   1. pytest -m gpu (tests/unit: the Triton kernel's GPU shapes, ImageBind's fp16 precision)
#   2. benchmarks/attention.py: fused multi-branch attention vs two SDPA + mul + add (targets >= 2x, >= 50 % of
#      the bytes floor; the HBM bandwidth is taken from the GPU's name)
#   3. benchmarks/ip2p_step.py: InstructPix2Pix dual-CFG step, ours vs diffusers, fp16, 256 px
#   4. benchmarks/smartedit_encode.py: SmartEdit-7B-shaped encode, fp16 / fp8 weights, whole / lowvram
#
#   bash benchmarks/gpu_checks.sh             # on the GPU machine
#   bash benchmarks/gpu_checks.sh --dry-run   # anywhere: every step starts on CPU; CUDA steps say "skipped: no CUDA"
#   bash benchmarks/gpu_checks.sh --prepare   # here, with network: fill .gpu_carry/ for a bare GPU machine
#
# A bare GPU machine has torch, triton, transformers, peft and pytest but no ComfyUI and no diffusers, and no
# network: --prepare puts ComfyUI 0.3.64 (the tarball parts CI unpacks, or $COMFYUI_TARBALL_DIR) and the missing wheels in
# .gpu_carry/ (git-ignored), which travels with the checkout (the device tool's `carry`). The run unpacks them into
# /tmp. COMFYUI_PATH, when set, is used as is. Each step has its own time limit; a failing step is reported in the
# summary and the others still run (exit status 1 at the end).
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
PY="${PYTHON:-python3}"
carry="$repo/.gpu_carry"
tarballs="${COMFYUI_TARBALL_DIR:-$(dirname "$repo")/shared/comfyui}"  # beside the checkout, as in .ci/run
WHEELS="diffusers==0.42.1 importlib_metadata torchsde==0.2.6 trampoline==0.1.2"  # what ComfyUI's samplers and ip2p_step add

prepare() {
  mkdir -p "$carry/wheels" "$carry/comfyui"
  cp "$tarballs"/ComfyUI-0.3.64.tar.gz.part* "$carry/comfyui/"
  # shellcheck disable=SC2086
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d "$carry/wheels" $WHEELS
  du -sh "$carry"
}

dry=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry=1 ;;
    --prepare) prepare; exit $? ;;
    *) echo "usage: bash benchmarks/gpu_checks.sh [--dry-run | --prepare]" >&2; exit 2 ;;
  esac
done

out="${OUT:-$repo/benchmarks/gpu_checks_out}"
mkdir -p "$out"
summary="$out/gpu_checks_summary.txt"
work="$(mktemp -d "${TMPDIR:-/tmp}/lmm-gpu-checks.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
started=$SECONDS
failed=0

note() { echo "$*" | tee -a "$summary"; }

setup() {
  if [ -d "$carry/wheels" ] && ls "$carry"/wheels/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$work/site" "$carry"/wheels/*.whl &&
      export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  if [ -z "${COMFYUI_PATH:-}" ]; then
    local parts=("$carry"/comfyui/ComfyUI-0.3.64.tar.gz.part*)
    [ -e "${parts[0]}" ] || parts=("$tarballs"/ComfyUI-0.3.64.tar.gz.part*)
    if [ -e "${parts[0]}" ]; then
      cat "${parts[@]}" | tar -xz -C "$work" && export COMFYUI_PATH="$work/ComfyUI"
    fi
  fi
  cuda="$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>/dev/null)"
  case "$cuda" in
    *H200*) bandwidth=4.8 ;;
    *H100*PCIe*) bandwidth=2.0 ;;
    *H100*) bandwidth=3.35 ;;
    *) bandwidth=3.35 ;;
  esac
  if [ "$dry" = 1 ]; then cuda=""; fi
  note "LMM Edit GPU checks, $(date -u +%FT%TZ), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  note "GPU: ${cuda:-none}  torch: $("$PY" -c 'import torch; print(torch.__version__)')  ComfyUI: ${COMFYUI_PATH:-missing}" \
    " HBM bandwidth assumed: $bandwidth TB/s"
}

# step NAME SECONDS NEEDS_CUDA COMMAND...: runs COMMAND (on --dry-run a CUDA step runs COMMAND --help, which
# starts it on CPU, then says it skipped the rest), keeps its log and its last lines in the summary
step() {
  local name="$1" limit="$2" needs_cuda="$3" t0=$SECONDS log="$out/$1.log"
  shift 3
  note ""
  note "== $name"
  if [ "$needs_cuda" = 1 ] && [ -z "$cuda" ]; then
    if timeout 120 "$@" --help >"$log" 2>&1; then
      note "$name: started on CPU; skipped: no CUDA"
    else
      tail -n 20 "$log" | tee -a "$summary"
      note "$name: FAILED to start (exit status $?)"
      failed=1
    fi
    return
  fi
  timeout "$limit" "$@" >"$log" 2>&1
  local status=$?
  tail -n 25 "$log" >>"$summary"
  if [ $status -eq 0 ]; then
    note "$name: done in $((SECONDS - t0)) s"
  else
    note "$name: FAILED (exit status $status$([ $status -eq 124 ] && echo ", over its $limit s limit")) after $((SECONDS - t0)) s"
    failed=1
  fi
}

: >"$summary"
setup
step pytest_gpu 150 0 "$PY" -m pytest -m gpu tests/unit -q -p no:cacheprovider -rs --basetemp "$work/pytest"
step attention 90 1 "$PY" benchmarks/attention.py --bandwidth-tbs "$bandwidth"
step ip2p_step 120 1 "$PY" benchmarks/ip2p_step.py --size 256 --steps 4 --repeats 3
step smartedit_encode 210 1 "$PY" benchmarks/smartedit_encode.py --device cuda --bandwidth-tbs "$bandwidth" \
  --json "$out/smartedit_encode.json"
note ""
note "total: $((SECONDS - started)) s; $([ $failed = 0 ] && echo 'every step passed' || echo 'SOME STEPS FAILED')"
exit $failed
