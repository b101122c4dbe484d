"""SmartEdit's BIM residual v' in ComfyUI's UNet: added right after conv_in, in every guidance branch.

Reference (TencentARC/SmartEdit `model/unet_2d_condition_ZeroConv.py`): `sample = conv_in(sample) + v'`
before the first down block, the same v' for the three CFG branches (docs/smartedit.md, The BIM residual).
In ComfyUI's SD1.5 UNet, input block 0 is conv_in, and an `input_block_patch` runs on its output
before the skip connection is stored (comfy/ldm/modules/diffusionmodules/openaimodel.py), so the
skip of block 0 carries v' as the reference's does.

v' travels as the model cond ``lmm_edit_bim_residual`` (model_conds.py): ComfyUI batches it across
the branches of one UNet call, the router moves it into ``transformer_options``, and the patch
adds it. Keyed: a conditioning without it (plain InstructPix2Pix) leaves the UNet untouched.
"""

from __future__ import annotations

import comfy.model_patcher
import torch
import torch.nn.functional as F

from .model_conds import install_model_cond_router

BIM_RESIDUAL_KEY = "lmm_edit_bim_residual"  # model cond: v' [B, C_unet, h, w]
CONV_IN_BLOCK = ("input", 0)


def add_bim_residual(h: torch.Tensor, transformer_options: dict) -> torch.Tensor:
    """input_block_patch: h [B, 320, h, w] + v' at block ("input", 0) when the branch batch carries v'.

    v' is made at the latent size of the BIM node; a latent of another size (another LATENT
    wired to the sampler, area conditioning) gets v' resized bilinearly, as the BIM resizes it.
    """
    residual = transformer_options.get(BIM_RESIDUAL_KEY)
    if residual is None or transformer_options.get("block") != CONV_IN_BLOCK:
        return h
    residual = residual.to(device=h.device, dtype=h.dtype)
    if residual.shape[-2:] != h.shape[-2:]:
        residual = F.interpolate(residual, size=h.shape[-2:], mode="bilinear", align_corners=False)
    if residual.shape[0] != h.shape[0]:
        raise ValueError(
            f"the BIM residual has batch {residual.shape[0]}, the UNet input {h.shape[0]}: it must travel as the "
            f"model cond '{BIM_RESIDUAL_KEY}' of LMMEdit_BIMConditioning's outputs"
        )
    return h + residual


def install_bim_residual(model: comfy.model_patcher.ModelPatcher) -> None:
    """Adds the model-cond router and the conv_in patch to a ModelPatcher (once)."""
    install_model_cond_router(model)
    patches = model.model_options["transformer_options"].get("patches", {}).get("input_block_patch", [])
    if add_bim_residual not in patches:
        model.set_model_input_block_patch(add_bim_residual)
