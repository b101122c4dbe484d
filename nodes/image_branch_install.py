"""Installing an image branch (IP-Adapter / InsightEdit IAA) on a ComfyUI MODEL and its conditionings.

The torch work is in ``loaders/ip_adapter`` (``image_tokens``, ``image_branch_patch``). Here: where the
adapter runs (a ModelPatcher ComfyUI loads with the UNet), which UNet layers get the patch (from the
model's detected ``unet_config``), the sigma window from ComfyUI's ``model_sampling``, the one-time
kernel probe, and the image tokens travelling as model conds of both conditionings.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import comfy.ldm.modules.attention
import comfy.model_management
import comfy.model_patcher
import torch

from ..kernels import MULTI_BRANCH_CROSS_ATTENTION, probe
from ..loaders.ip_adapter import CrossAttentionLayer, ImageAdapter, cross_attention_layers
from ..loaders.ip_adapter.image_branch_patch import (
    AUTO_BACKEND,
    BACKEND_OPTION,
    TOKEN_KEY_FORMAT,
    ImageBranchPatch,
    ImageBranchSettings,
    backend_choice,
    is_image_branch_patch,
    next_branch_index,
)
from .model_conds import attach_model_cond, install_model_cond_router


def comfy_text_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
    """ComfyUI's own cross-attention, as the unpatched attn2 layer computes it (``CrossAttention.forward``)."""
    return comfy.ldm.modules.attention.optimized_attention(
        q, k, v, extra_options["n_heads"], attn_precision=extra_options.get("attn_precision"),
        transformer_options=extra_options,
    )


def wrap_adapter(adapter: ImageAdapter) -> comfy.model_patcher.ModelPatcher:
    """The adapter as a ModelPatcher on the UNet's devices, so ComfyUI moves and frees it with the UNet."""
    return comfy.model_patcher.ModelPatcher(
        adapter.eval(),
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


def unet_compute_dtype(model) -> torch.dtype:
    """The dtype attn2 sees q, k, v in (the manual-cast dtype when ComfyUI casts weights per layer)."""
    return model.model.manual_cast_dtype or model.model.get_dtype()


def adapter_in_dtype(adapter_patcher, dtype: torch.dtype):
    """The adapter's ModelPatcher, or a copy converted once to ``dtype`` when the file's dtype differs."""
    if adapter_patcher.model.to_k_ip[0].dtype == dtype:
        return adapter_patcher
    converted = copy.deepcopy(adapter_patcher.model).to(device=adapter_patcher.offload_device, dtype=dtype)
    return wrap_adapter(converted)


def unet_layers(model) -> tuple[list[CrossAttentionLayer], dict]:
    config = model.model.model_config.unet_config
    return cross_attention_layers(config), config


def head_dims(layers: Sequence[CrossAttentionLayer], unet_config: dict) -> list[int]:
    """attn2 head widths: channels / num_heads (SD1.5: 8 heads) or num_head_channels (SDXL: 64)."""
    heads = unet_config.get("num_heads", -1)
    per_head = unet_config.get("num_head_channels", -1)
    return sorted({layer.channels // heads if heads > 0 else per_head for layer in layers})


def probe_attention(model, layers: Sequence[CrossAttentionLayer], unet_config: dict) -> list[str]:
    """Run the attention backend once per head width on the UNet's device and dtype (raises on failure)."""
    backend = model.model_options["transformer_options"].get(BACKEND_OPTION, AUTO_BACKEND)
    dtype = unet_compute_dtype(model)
    chosen = []
    for head_dim in head_dims(layers, unet_config):
        with backend_choice(backend):
            chosen.append(probe(MULTI_BRANCH_CROSS_ATTENTION, model.load_device, dtype, head_dim))
    return chosen


def _existing_patches(model, layers: Sequence[CrossAttentionLayer]) -> list[object | None]:
    """This pack's patch per layer (None where there is none); another pack's patch is refused."""
    replace = model.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})
    found = []
    for layer in layers:
        name, number, _ = layer.block_key
        for key in (layer.block_key, (name, number)):
            patch = replace.get(key)
            if patch is not None and not is_image_branch_patch(patch):
                raise ValueError(
                    f"this MODEL already has another cross-attention patch at UNet block {key} "
                    f"({type(patch).__module__}.{type(patch).__name__}, e.g. from ComfyUI_IPAdapter_plus). Both "
                    "cannot replace the same attention. Fix: use LMMEdit_IAAImageBranch for every image prompt "
                    "on this model (several branches stack), or apply the other pack's nodes to a separate model."
                )
        found.append(replace.get(layer.block_key))
    return found


def sigma_window(model, start_percent: float, end_percent: float) -> tuple[float | None, float | None]:
    """``(sigma_start, sigma_end)`` from ComfyUI's schedule; ``(None, None)`` for the whole run (no check)."""
    if start_percent <= 0.0 and end_percent >= 1.0:
        return None, None
    sampling = model.get_model_object("model_sampling")
    return float(sampling.percent_to_sigma(start_percent)), float(sampling.percent_to_sigma(end_percent))


def install_image_branch(
    model,
    adapter_patcher,
    weights: tuple[float, ...],
    start_percent: float,
    end_percent: float,
    mask: torch.Tensor | None,
):
    """A clone of ``model`` with one more image branch on every attn2 layer; returns (MODEL, token key, backends).

    Checks the adapter against the UNet and probes the attention kernel first, so a mismatch or a
    broken backend fails here, not mid-sampling.
    """
    layers, unet_config = unet_layers(model)
    adapter = adapter_patcher.model
    adapter.check_unet(layers, unet_config["context_dim"])
    existing = _existing_patches(model, layers)
    backends = probe_attention(model, layers, unet_config)

    token_key = TOKEN_KEY_FORMAT.format(next_branch_index([p for p in existing if p is not None]))
    owner = adapter_in_dtype(adapter_patcher, unet_compute_dtype(model))
    sigma_start, sigma_end = sigma_window(model, start_percent, end_percent)
    settings = ImageBranchSettings(
        token_key, owner.model, tuple(weights), sigma_start, sigma_end, mask, weights_owner=owner
    )

    patched = model.clone()
    install_model_cond_router(patched)
    for index, (layer, patch) in enumerate(zip(layers, existing)):
        base = patch if patch is not None else ImageBranchPatch(index, (), comfy_text_attention)
        patched.set_model_attn2_replace(base.with_branch(settings), *layer.block_key)
    return patched, token_key, backends


def attach_image_tokens(
    positive: list, negative: list, token_key: str, cond_tokens: torch.Tensor, uncond_tokens: torch.Tensor
) -> tuple[list, list]:
    """Both conditionings carry the branch's tokens (equal shapes, so the guidance branches still batch)."""
    if cond_tokens.shape != uncond_tokens.shape:
        raise ValueError(f"conditional {tuple(cond_tokens.shape)} and unconditional {tuple(uncond_tokens.shape)} "
                         "image tokens must have one shape")
    return attach_model_cond(positive, token_key, cond_tokens), attach_model_cond(negative, token_key, uncond_tokens)
