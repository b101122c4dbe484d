"""Weight storage dtypes: the big layers' weights kept narrower than the compute dtype, cast per layer.

As ComfyUI's UNETLoader ``weight_dtype`` (comfyanonymous/ComfyUI ``nodes.py`` UNETLoader, ``comfy/ops.py``
``manual_cast``): the weights of the ``Linear`` and ``Embedding`` layers (all but a few MB of an LMM) are stored
in fp8 (or fp16/bf16), and each layer casts its weight to the activations' dtype when it runs. Norms, biases
and raw parameters keep the compute dtype: they are small and the precision of norms matters. The layer classes
must cast (``comfy_cast_weights``, e.g. ``comfy.ops.manual_cast``); ``torch.nn`` layers cannot run narrower
weights than their inputs, so the default operations refuse any storage dtype but the compute dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .dtypes import NAMED_DTYPES

STORAGE_CHOICES = ("default", "fp16", "bf16", "fp8_e4m3fn", "fp8_e5m2")
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "fp16": NAMED_DTYPES["fp16"], "bf16": NAMED_DTYPES["bf16"],
    "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2,
}


def storage_dtype(choice: str, compute: torch.dtype) -> torch.dtype:
    """The dtype a storage choice stores weights in; "default": the compute dtype."""
    if choice == "default":
        return compute
    if choice not in STORAGE_DTYPES:
        raise ValueError(f"weight_dtype must be one of {STORAGE_CHOICES}, got {choice!r}")
    return STORAGE_DTYPES[choice]


def casts_weights(operations) -> bool:
    """Whether the namespace's layers cast their weights per call (ComfyUI's manual_cast)."""
    return bool(getattr(operations.Linear, "comfy_cast_weights", False))


def stored_layers(module: nn.Module, only: Callable[[str], bool] | None = None) -> list[nn.Module]:
    """The layers whose weights a storage dtype applies to: Linear and Embedding (of any layer namespace) whose
    qualified name passes `only`."""
    return [m for n, m in module.named_modules()
            if isinstance(m, (nn.Linear, nn.Embedding)) and (only is None or only(n))]


def decoder_layer(name: str) -> bool:
    """A layer of a transformers VLM's language decoder blocks (``...layers.N...``, not the vision tower): the
    weights transformers never reads directly (it reads the embedding's and the vision tower's dtype)."""
    return ".layers." in f".{name}" and not any(part in name for part in ("vision", "visual"))


def store_weights(module: nn.Module, dtype: torch.dtype, compute: torch.dtype, operations,
                  only: Callable[[str], bool] | None = None) -> int:
    """Cast the Linear and Embedding weights of `module` (those `only` passes) to `dtype` in place (one layer at a
    time, so at most one extra layer is held); returns the number of layers changed. Biases keep the compute
    dtype."""
    if dtype == compute:
        return 0
    if not casts_weights(operations):
        raise ValueError(
            f"weights stored in {dtype} with compute in {compute} need layers that cast per call "
            "(comfy.ops.manual_cast); these layers cannot"
        )
    layers = stored_layers(module, only)
    for layer in layers:
        layer.weight = nn.Parameter(layer.weight.detach().to(dtype), requires_grad=False)
    return len(layers)
