"""Our plain torch modules (LMM, bridge) as ComfyUI ModelPatchers, so ComfyUI's memory manager owns them.

ComfyUI then decides where they run (``text_encoder_device()``: the GPU unless ``--lowvram``/
``--cpu``), moves them there with ``load_models_gpu`` before each use, and offloads them to
make room for the UNet when VRAM is short, on "Unload models" and on ``POST /free``
(docs/comfyui.md, Model management). The modules use stock ``torch.nn`` layers, which ComfyUI cannot load
partially, so each is loaded whole (``force_full_load``).
"""

from __future__ import annotations

import comfy.model_management
import comfy.model_patcher
import torch

from ..loaders.dtypes import NAMED_DTYPES

DTYPE_CHOICES = ("auto", "fp16", "bf16", "fp32")


def lmm_load_device() -> torch.device:
    """Where ComfyUI runs text encoders; an LMM is one."""
    return comfy.model_management.text_encoder_device()


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    """auto: fp16, else bf16, where ComfyUI says the device runs them well; fp32 on CPU (the reference's dtype)."""
    if choice in NAMED_DTYPES:
        return NAMED_DTYPES[choice]
    if choice != "auto":
        raise ValueError(f"dtype must be one of {DTYPE_CHOICES}, got {choice!r}")
    if comfy.model_management.is_device_cpu(device):
        return torch.float32
    if comfy.model_management.should_use_fp16(device):
        return torch.float16
    if comfy.model_management.should_use_bf16(device):
        return torch.bfloat16
    return torch.float32


def explicit_dtype(choice: str) -> torch.dtype | None:
    """The dtype a user picked, or None for auto (let ComfyUI pick, e.g. for the UNet)."""
    return NAMED_DTYPES.get(choice)


def wrap_module(module: torch.nn.Module, load_device: torch.device) -> comfy.model_patcher.ModelPatcher:
    """A ModelPatcher around a module built on CPU; ComfyUI moves it to `load_device` when it is used."""
    return comfy.model_patcher.ModelPatcher(
        module.eval(), load_device=load_device, offload_device=comfy.model_management.text_encoder_offload_device()
    )


def load_for_use(patcher: comfy.model_patcher.ModelPatcher, working_bytes: int = 0) -> torch.nn.Module:
    """Loads the module onto its device through ComfyUI (evicting others if needed) and returns it."""
    comfy.model_management.load_models_gpu([patcher], memory_required=working_bytes, force_full_load=True)
    return patcher.model
