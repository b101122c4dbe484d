"""One call per SmartEdit component, and one for all: what the ComfyUI loader node uses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..ip2p.unet_keys import DIFFUSERS_PREFIX, LDM_PREFIX, diffusers_unet_to_ldm
from .bundle import FileFormat, SmartEditBundle, find_bundle
from .conditioning import SmartEditBridge
from .errors import SmartEditLoadError
from .files import read_tensors
from .load_bridge import load_bridge
from .load_lmm import SmartEditLMM, load_lmm


@dataclass
class SmartEditModels:
    lmm: SmartEditLMM
    bridge: SmartEditBridge
    unet_ldm: dict[str, torch.Tensor]  # `model.diffusion_model.*` keys, 8 input channels
    bundle: SmartEditBundle


def load_unet_ldm(bundle: SmartEditBundle, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The SmartEdit UNet as an LDM state dict (`model.diffusion_model.*`), for ComfyUI's own UNet loading."""
    state = read_tensors(bundle.unet, lambda k: k.startswith((DIFFUSERS_PREFIX, LDM_PREFIX)), dtype)
    if any(k.startswith(LDM_PREFIX) for k in state):
        return {k: v for k, v in state.items() if k.startswith(LDM_PREFIX)}
    if "unet.conv_in.weight" not in state:
        raise SmartEditLoadError(
            bundle.unet, "UNet tensors unet.* (diffusers layout, 8-channel conv_in)", f"{len(state)} of them",
            "use unet-<step>/adapter_model.bin of the release",
        )
    try:
        return diffusers_unet_to_ldm(state)
    except (KeyError, ValueError) as err:
        raise SmartEditLoadError(
            bundle.unet, "an SD1.5-layout diffusers UNet", str(err), "use unet-<step>/adapter_model.bin of the release"
        ) from err


def load_smartedit(
    bundle_dir: str | Path,
    llava_dir: str | Path,
    clip_path: str | Path,
    *,
    tokenizer_path: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    unet_dtype: torch.dtype | None = None,
    qformer_heads: int | None = None,
    step: int | None = None,
    file_format: FileFormat = "auto",
) -> SmartEditModels:
    """Load every SmartEdit component on CPU. LMM and bridge in `dtype`; UNet tensors cast to `unet_dtype`
    (None: as stored)."""
    bundle = find_bundle(bundle_dir, step=step, file_format=file_format)
    return SmartEditModels(
        lmm=load_lmm(bundle, llava_dir, clip_path, tokenizer_path, dtype),
        bridge=load_bridge(bundle, dtype, qformer_heads),
        unet_ldm=load_unet_ldm(bundle, unet_dtype),
        bundle=bundle,
    )
