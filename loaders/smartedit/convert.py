"""Release SmartEdit bundle -> compact per-component safetensors, loadable by the same loader.

The release `.bin` files can carry multi-GB shared storages (DeepSpeed ZeRO-2 flat buffers); the
converted files hold each kept tensor once. Keys stay the release keys (so `load_lmm` / `load_bridge`
read them unchanged), except the UNet, which is written with LDM keys (`model.diffusion_model.*`) so
ComfyUI's UNETLoader can also read `unet.safetensors` directly. The LoRA settings of
`adapter_config.json` travel in the metadata of `llm.safetensors`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..dtypes import NAMED_DTYPES
from .files import CONVERTED_FORMAT, CONVERTED_NAMES, find_bundle, read_tensors
from .load import BIM_PREFIXES, LLM_PREFIX, load_unet_ldm

KEEP_FP32 = ("rotary_emb.inv_freq",)  # RoPE frequencies stay fp32 (transformers 4.28 builds cos/sin in fp32)
UNUSED_IN_QFORMER_FILE = "model.base_model.model.embed_tokens.weight"  # load_pretrained_for_inference discards it


def _cast(state: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    if dtype is None:
        return state
    return {
        k: v.to(dtype) if v.is_floating_point() and not k.endswith(KEEP_FP32) else v for k, v in state.items()
    }


def _save_atomically(state: dict[str, torch.Tensor], out: Path, metadata: dict[str, str]) -> None:
    """Write next to `out`, then rename: an interrupted conversion never leaves a truncated file under the real name."""
    partial = out.with_name(out.name + ".partial")
    try:
        save_file(state, str(partial), metadata=metadata)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)


def convert_smartedit(src: str | Path, dst: str | Path, dtype: str | None = None, step: int | None = None) -> dict[str, Path]:
    """Write llm / embeddings_qformer / bim / unet `.safetensors` of the bundle `src` into folder `dst`.

    dtype: "fp16", "bf16", "fp32" or None (keep the stored dtypes). Returns the written paths.
    """
    bundle = find_bundle(src, step=step)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    target = NAMED_DTYPES[dtype] if dtype else None
    meta = {"format": CONVERTED_FORMAT, "source": str(bundle.root)}
    lora_meta = {
        "lora_r": str(bundle.lora.r),
        "lora_alpha": str(bundle.lora.alpha),
        "lora_target_modules": ",".join(bundle.lora.target_modules),
    }
    written = {}
    parts = {
        "llm": (bundle.llm, lambda k: k.startswith(LLM_PREFIX), lora_meta),
        "embeddings_qformer": (bundle.embeddings_qformer, lambda k: k != UNUSED_IN_QFORMER_FILE, {}),
        "bim": (bundle.bim, lambda k: k.startswith(BIM_PREFIXES), {}),
    }
    for name, (path, keep, extra_meta) in parts.items():
        out = dst / CONVERTED_NAMES[name]
        _save_atomically(_cast(read_tensors(path, keep), target), out, {**meta, "component": name, **extra_meta})
        written[name] = out
    out = dst / CONVERTED_NAMES["unet"]
    _save_atomically(_cast(load_unet_ldm(bundle), target), out, {**meta, "component": "unet"})
    written["unet"] = out
    return written
