"""Release SmartEdit bundle -> compact per-component safetensors, loadable by the same loader.

The release `.bin` files can carry multi-GB shared storages (DeepSpeed ZeRO-2 flat buffers); the
converted files hold each kept tensor once. Keys stay the release keys (so `load_lmm` / `load_bridge`
read them unchanged), except the UNet, which is written with LDM keys (`model.diffusion_model.*`) so
ComfyUI's UNETLoader can also read `unet.safetensors` directly. The LoRA settings of
`adapter_config.json` travel in the metadata of `llm.safetensors`.

All or nothing (staging.py): the four files are written into a staging sibling of the output folder and
swapped in with one rename. Every file carries the same `source` and `conversion` metadata, which the
reader (bundle.py) compares, so files of two conversions are never loaded together.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from ..dtypes import NAMED_DTYPES
from ..errors import ModelFileError
from . import staging
from .files import CONVERTED_FORMAT, CONVERTED_NAMES, find_bundle, read_tensors
from .load import BIM_PREFIXES, LLM_PREFIX, load_unet_ldm

KEEP_FP32 = ("rotary_emb.inv_freq",)  # RoPE frequencies stay fp32 (transformers 4.28 builds cos/sin in fp32)
UNUSED_IN_QFORMER_FILE = "model.base_model.model.embed_tokens.weight"  # load_pretrained_for_inference discards it


@dataclass(frozen=True)
class Conversion:
    files: dict[str, Path]  # component -> written file
    notes: list[str]  # what was cleaned up from earlier, interrupted runs


def _cast(state: dict[str, torch.Tensor], dtype: torch.dtype | None, clamp: bool, source: Path) -> dict[str, torch.Tensor]:
    """Floating tensors cast to ``dtype``; finite values beyond its range refuse, or are clipped when ``clamp``."""
    if dtype is None:
        return state
    limit = torch.finfo(dtype).max
    out = {}
    for key, value in state.items():
        if not value.is_floating_point() or key.endswith(KEEP_FP32):
            out[key] = value
            continue
        beyond = value.isfinite() & (value.abs() > limit)
        if beyond.any():
            if not clamp:
                largest = float(value[beyond].abs().max())
                raise ModelFileError(
                    source, f"values within the range of {dtype} (|x| <= {limit:g})",
                    f"{key} holds {int(beyond.sum())} beyond it (largest |x| {largest:.6g}), which would become inf",
                    "convert with --dtype bf16 or fp32, or pass --clamp to clip them to the range",
                )
            value = value.clamp(-limit, limit)
        out[key] = value.to(dtype)
    return out


def _write(state: dict[str, torch.Tensor], out: Path, dst: Path, metadata: dict[str, str]) -> None:
    try:
        save_file(state, str(out), metadata=metadata)
    except (OSError, SafetensorError) as err:
        size = sum(t.numel() * t.element_size() for t in state.values())
        raise staging.write_error(dst, dst / out.name, err, size) from err


def convert_smartedit(
    src: str | Path, dst: str | Path, dtype: str | None = None, step: int | None = None, clamp: bool = False
) -> Conversion:
    """Write llm / embeddings_qformer / bim / unet `.safetensors` of the bundle `src` into folder `dst`.

    dtype: "fp16", "bf16", "fp32" or None (keep the stored dtypes); clamp: clip values beyond the
    target dtype's range instead of refusing. An existing `dst` holding a previous conversion is
    replaced as a whole, or not at all.
    """
    bundle = find_bundle(src, step=step)
    dst = Path(dst).absolute()
    notes = staging.remove_stale(dst)
    staging.check_destination(bundle.root, dst, set(CONVERTED_NAMES.values()))
    target = NAMED_DTYPES[dtype] if dtype else None
    meta = {
        "format": CONVERTED_FORMAT, "source": str(bundle.root.resolve()), "conversion": uuid.uuid4().hex,
        "dtype": dtype or "stored",
    }
    lora_meta = {
        "lora_r": str(bundle.lora.r),
        "lora_alpha": str(bundle.lora.alpha),
        "lora_target_modules": ",".join(bundle.lora.target_modules),
    }
    parts = {
        "llm": (bundle.llm, lambda k: k.startswith(LLM_PREFIX), lora_meta),
        "embeddings_qformer": (bundle.embeddings_qformer, lambda k: k != UNUSED_IN_QFORMER_FILE, {}),
        "bim": (bundle.bim, lambda k: k.startswith(BIM_PREFIXES), {}),
        "unet": (bundle.unet, None, {}),
    }
    staged = staging.make_staging(dst)
    try:
        for name, (path, keep, extra_meta) in parts.items():
            state = load_unet_ldm(bundle) if name == "unet" else read_tensors(path, keep)
            out = staged / CONVERTED_NAMES[name]
            _write(_cast(state, target, clamp, path), out, dst, {**meta, "component": name, **extra_meta})
            staging.checkpoint(f"written-{name}")
        staging.checkpoint("before-swap")
        staging.swap_in(staged, dst)
    except OSError as err:
        raise staging.write_error(dst, dst, err) from err
    finally:
        if staged.exists():
            shutil.rmtree(staged)
    return Conversion({name: dst / file for name, file in CONVERTED_NAMES.items()}, notes)
