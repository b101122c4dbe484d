"""Carry per-branch tensors of the pack (BIM residual, image tokens) from CONDITIONING to UNet patches.

A conditioning dict may hold ``"model_conds": {key: CONDRegular(tensor)}``. ComfyUI keeps
such model conds through cond conversion, concatenates them across the guidance branches
that share one UNet call, and passes them to the diffusion model as keyword arguments.
A DIFFUSION_MODEL wrapper then moves every key of this pack into ``transformer_options``,
where block and attention patches read them. Keys are prefixed so that a MODEL whose
conditioning carries none of them runs exactly as before.
"""

from __future__ import annotations

import comfy.conds
import comfy.patcher_extension
import torch

MODEL_COND_PREFIX = "lmm_edit_"
ROUTER_KEY = "lmm_edit.model_cond_router"


def attach_model_cond(conditioning: list, key: str, value: torch.Tensor) -> list:
    """Copy of a CONDITIONING whose every entry carries ``value`` [1, ...] as model cond ``key``."""
    if not key.startswith(MODEL_COND_PREFIX):
        raise ValueError(f"model cond keys of this pack start with '{MODEL_COND_PREFIX}', got '{key}'")
    out = []
    for tensor, options in conditioning:
        options = options.copy()
        model_conds = dict(options.get("model_conds", {}))
        model_conds[key] = comfy.conds.CONDRegular(value)
        options["model_conds"] = model_conds
        out.append([tensor, options])
    return out


def _route_model_conds(executor, x, timesteps, context, y, control, transformer_options, **kwargs):
    ours = [k for k in kwargs if k.startswith(MODEL_COND_PREFIX)]
    if ours:
        transformer_options = transformer_options.copy()
        for key in ours:
            transformer_options[key] = kwargs.pop(key)
    return executor(x, timesteps, context, y, control, transformer_options, **kwargs)


def install_model_cond_router(model_patcher) -> None:
    """Adds (once) the wrapper that moves this pack's model conds into transformer_options."""
    wrappers = model_patcher.wrappers.get(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, {})
    if ROUTER_KEY not in wrappers:
        model_patcher.add_wrapper_with_key(
            comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, ROUTER_KEY, _route_model_conds
        )
