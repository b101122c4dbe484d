"""SmartEdit's bridge: Q-Former + BIM -> the UNet's text conditioning and its conv_in residual.

Reference order and dtype hops (test/DS_SmartEdit_test.py `generate_LLaVA_image`, main(); fixture README):
    q   = QFormer(states)                    fp32 compute
    q16 = q.to(fp16)                         the value the rest of the pipeline uses
    f_mod, v_mod = BIM(q16 -> compute dtype, CLIP patch features)
    v'  = zeroconv(bilinear(v_mod as [C,16,16] -> latent size)).to(fp16)
    f'  = qformer_out_head(f_mod).to(fp16)
    cond = q16 + 0.5 * f'                    in fp16

Non-square latents: the reference calls `F.interpolate(size=(latent_w, latent_h))`, passing the width as
the height; it only ever runs square sizes, where this is harmless. Here the size is (latent_h, latent_w),
so a non-square latent gets a correctly oriented v'; square results are identical to the reference's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..instruction import LMMInstruction
from .bim import BIM
from .qformer import QFormer

TEXT_RESIDUAL_WEIGHT = 0.5  # generate_LLaVA_image: both_condition_embeddings + 0.5 * modulated_SD_features
REFERENCE_CAST = torch.float16  # the reference casts q, f' and v' to fp16 whatever the compute dtype


@dataclass(frozen=True)
class BridgeOutput:
    """cond [1, 77, D_text] fp16; residual [1, C_unet, h, w] fp16 (added after conv_in);
    attention [1, g, g] fp32 in 0..1: the BIM's final token-to-image attention averaged over heads and the
    77 queries, normalised to its maximum (the edit-region map); qformer_out [1, 77, D_text] fp32."""

    cond: torch.Tensor
    residual: torch.Tensor
    attention: torch.Tensor
    qformer_out: torch.Tensor


class SmartEditBridge(nn.Module):
    """The bridge handle: `qformer` (QFormer) and `bim` (BIM)."""

    def __init__(self, qformer: QFormer, bim: BIM) -> None:
        super().__init__()
        self.qformer = qformer
        self.bim = bim

    @property
    def dtype(self) -> torch.dtype:
        return self.bim.modulate_head.weight.dtype

    @property
    def weight_device(self) -> torch.device:
        # not `device`: ComfyUI's ModelPatcher assigns `.device` on the module it manages
        return self.bim.modulate_head.weight.device


@dataclass(frozen=True)
class BIMOutput:
    """fp32-or-compute-dtype BIM internals (before the fp16 casts)."""

    points: torch.Tensor  # modulate_head(q) [B, 77, C]
    image_pe: torch.Tensor  # [C, g, g]
    queries: torch.Tensor  # [B, 77, C]
    keys: torch.Tensor  # [B, g*g, C]
    text_residual: torch.Tensor  # f' [B, 77, D_text]
    image_residual: torch.Tensor  # v' [B, C_unet, h, w]
    attention: torch.Tensor  # [B, heads, 77, g*g]


def run_bim(bim: BIM, query: torch.Tensor, image_features: torch.Tensor, latent_hw: tuple[int, int]) -> BIMOutput:
    """`inference_BIM_module`: query [B, 77, D_text]; image_features [B, P, C] (CLIP patches, P = g*g)."""
    dtype = bim.modulate_head.weight.dtype
    query, image_features = query.to(dtype), image_features.to(dtype)
    b, p, c = image_features.shape
    g = math.isqrt(p)
    points = bim.modulate_head(query)
    image = image_features.permute(0, 2, 1).reshape(b, c, g, g)
    pe = bim.pe_layer(g, g)
    queries, keys, attn = bim.modulate_transformer(image, pe.unsqueeze(0).expand(b, -1, -1, -1), points)
    grid = keys.transpose(1, 2).reshape(b, c, g, g)
    grid = F.interpolate(grid, size=tuple(latent_hw), mode="bilinear", align_corners=False)  # (h, w): see module doc
    return BIMOutput(
        points=points, image_pe=pe, queries=queries, keys=keys,
        text_residual=bim.dimension_reduction_head_qformer_out(queries),
        image_residual=bim.dimension_reduction_head_zeroconv(grid),
        attention=attn,
    )


@torch.inference_mode()
def bridge_condition(bridge: SmartEditBridge, instruction: LMMInstruction, latent_hw: tuple[int, int]) -> BridgeOutput:
    """LMMInstruction (32 states [N, D_llm], CLIP patches [P, C]) + latent size (h, w) -> BridgeOutput (CPU)."""
    device = bridge.weight_device
    states = instruction.hidden_states.to(device).unsqueeze(0)
    if states.shape[-1] != bridge.qformer.config.encoder_width:
        raise ValueError(
            f"the Q-Former cross-attends to states of width {bridge.qformer.config.encoder_width}; the instruction "
            f"holds width {states.shape[-1]}: the LMM and the bridge come from different SmartEdit bundles"
        )
    q = bridge.qformer(states)
    q16 = q.to(REFERENCE_CAST)
    out = run_bim(bridge.bim, q16, instruction.vision_features.to(device).unsqueeze(0), latent_hw)
    text16 = out.text_residual.to(REFERENCE_CAST)
    cond = q16 + TEXT_RESIDUAL_WEIGHT * text16
    g = math.isqrt(out.attention.shape[-1])
    attention = out.attention.float().mean(dim=(1, 2)).reshape(-1, g, g)
    attention = attention / attention.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return BridgeOutput(
        cond=cond.cpu(), residual=out.image_residual.to(REFERENCE_CAST).cpu(), attention=attention.cpu(), qformer_out=q.float().cpu()
    )
