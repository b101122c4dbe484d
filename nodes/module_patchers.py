"""Our torch modules (LMMs, bridge) as ComfyUI ModelPatchers, so ComfyUI's memory manager owns them.

ComfyUI then decides where they run (``text_encoder_device()``: the GPU unless ``--lowvram``/``--cpu``),
moves them there with ``load_models_gpu`` before each use, and offloads them to make room for the UNet
when VRAM is short, on "Unload models" and on ``POST /free`` (docs/comfyui.md, Model management).
The modules are built from ComfyUI's layer classes (``comfy.ops``; transformers models get them by
``adopt_comfy_layers``), so ComfyUI may load an LMM PARTIALLY: as many layers as fit in the VRAM it does not
reserve for the encode's working memory (``memory_required``: KV cache and activations) go to the GPU, and
the rest stay in RAM and are cast and copied per layer when they run (comfyanonymous/ComfyUI
``comfy/model_patcher.py`` ``ModelPatcher.load``, ``comfy/ops.py`` ``cast_bias_weight``).
"""

from __future__ import annotations

import comfy.model_management
import comfy.model_patcher
import comfy.ops
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


WEIGHT_DTYPE_TOOLTIP = (
    "How the LMM's Linear and Embedding weights are stored, as the UNet loader's weight_dtype: default = the dtype "
    "above; fp8_e4m3fn / fp8_e5m2 halve the weight memory of fp16, each layer being cast to the dtype above when "
    "it runs (some precision lost: see README, VRAM)."
)


def lmm_operations(storage: torch.dtype, compute: torch.dtype):
    """ComfyUI's layer classes for an LMM: casting ones (manual_cast) when the weights are stored in another dtype."""
    return comfy.ops.disable_weight_init if storage == compute else comfy.ops.manual_cast


def explicit_dtype(choice: str) -> torch.dtype | None:
    """The dtype a user picked, or None for auto (let ComfyUI pick, e.g. for the UNet)."""
    return NAMED_DTYPES.get(choice)


def wrap_module(module: torch.nn.Module, load_device: torch.device) -> comfy.model_patcher.ModelPatcher:
    """A ModelPatcher around a module built on CPU; ComfyUI moves it to `load_device` when it is used."""
    return comfy.model_patcher.ModelPatcher(
        module.eval(), load_device=load_device, offload_device=comfy.model_management.text_encoder_offload_device()
    )


def load_for_use(patcher: comfy.model_patcher.ModelPatcher, working_bytes: int = 0, *, whole: bool = False) -> torch.nn.Module:
    """Loads the module onto its device through ComfyUI (evicting others if needed) and returns it.

    working_bytes: memory the run needs beyond the weights, reserved before ComfyUI sizes the weights' share.
    whole: load every weight (small modules such as the bridge); else ComfyUI may load the module partially.
    """
    comfy.model_management.load_models_gpu([patcher], memory_required=working_bytes, force_full_load=whole)
    if not whole:
        place_rest(patcher)
    return patcher.model


def place_rest(patcher: comfy.model_patcher.ModelPatcher) -> int:
    """Partial loading moves only the layers ComfyUI can cast per call; put everything else the module holds
    (weights of foreign norm classes, raw parameters, buffers such as RoPE frequencies: a few MB) on the load
    device, where the computation runs. Returns the number of tensors moved."""
    device = patcher.load_device
    moved = 0
    for module in patcher.model.modules():
        castable = hasattr(module, "comfy_cast_weights")
        tensors = [t for n, t in module.named_parameters(recurse=False) if not (castable and n in ("weight", "bias"))]
        for tensor in tensors + list(module.buffers(recurse=False)):
            if tensor.device != device:
                tensor.data = tensor.data.to(device)
                moved += 1
    return moved


# torch.nn layer -> the ComfyUI class of the same layer (comfy/ops.py): exact types only, so a subclass with its
# own forward (a library's custom layer) keeps it
_COMFY_LAYERS = {
    torch.nn.Linear: "Linear", torch.nn.Embedding: "Embedding", torch.nn.LayerNorm: "LayerNorm",
    torch.nn.GroupNorm: "GroupNorm", torch.nn.Conv1d: "Conv1d", torch.nn.Conv2d: "Conv2d", torch.nn.Conv3d: "Conv3d",
}


def adopt_comfy_layers(module: torch.nn.Module, operations=None) -> int:
    """Give the stock torch.nn layers of a module another library built (a transformers VLM) ComfyUI's class of the
    same layer, in place (same parameters; the forward is torch's until ComfyUI makes the layer cast), so ComfyUI
    can load the module partially. Returns the number of layers changed."""
    operations = operations or comfy.ops.disable_weight_init
    changed = 0
    for layer in module.modules():
        name = _COMFY_LAYERS.get(type(layer))
        if name is None:
            continue
        layer.__class__ = getattr(operations, name)
        if name == "Embedding":
            layer.bias = None  # what comfy.ops.Embedding's reset_parameters sets; its cast reads it
        changed += 1
    return changed
