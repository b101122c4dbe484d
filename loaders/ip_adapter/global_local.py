"""InstructAny2Pix's SDXL adapter ``ip_adapter_global_local_2_view`` as an image-branch projection.

The module itself is ``loaders/any2pix/ip_projection.py`` (``GlobalLocalImageProj``: two views, global and
local crop, each projected to 4 tokens plus a learned per-view embedding ``raw_embed``, then LayerNorm). Here
it gets the interface ``ImageAdapter`` expects of a projection (``num_tokens``, ``context_dim``, ``forward``
from the family's input) with the reference's settings (jacklishufan/InstructAny2Pix @ d11e49b,
``instructany2pix/diffusion/ip_adapter/ip_adapter.py``, ``IPAdapterXL.generate``): ``mode="global"`` (the 4
global tokens), conditional scales ``[1, 0.5]`` with a zero local view, unconditional tokens = the projection
of zeros with scales ``[1, 1]`` (not zero tokens).

Input: the fused embedding ``[n, C]`` (InstructAny2Pix's ImageBind-space embedding; C = 1024 in the release)
or both views ``[n, 2, C]`` (global, local). ImageBind's vision tower is OpenCLIP ViT-H/14, so CLIP ViT-H
``image_embeds`` ``[n, 1024]`` are the same kind of input.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..operations import DEFAULT_OPERATIONS


class GlobalLocalProjection(nn.Module):
    """``[n, C]`` (global view; the local one zero) or ``[n, 2, C]`` -> image tokens ``[n, tokens, X]``."""

    def __init__(self, image_proj: nn.Module, mode: str = "global") -> None:
        super().__init__()
        self.image_proj = image_proj
        self.mode = mode
        config = image_proj.config
        self.input_width = config.clip_dim
        self.context_dim = config.cross_dim
        self.num_tokens = config.tokens * (2 if mode == "both" else 1)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        from ..any2pix.ip_projection import COND_SCALES

        embeds = embeds.to(self.image_proj.proj.weight.dtype)
        if embeds.dim() == 2:
            return self.image_proj.conditional(embeds, self.mode)
        return self.image_proj(embeds, self.mode, COND_SCALES)

    def unconditional(self, num_images: int) -> torch.Tensor:
        """The reference's unconditional tokens: the projection of zero views, scales [1, 1]."""
        return self.image_proj.unconditional(num_images, self.mode)


def global_local_projection(image_proj_state: dict[str, torch.Tensor], path: str | Path,
                            operations=DEFAULT_OPERATIONS) -> GlobalLocalProjection:
    """The projection of an ``image_proj`` section with ``raw_embed``, loaded strictly in the file's dtype.

    Raises ``ModelFileError`` (from ``GlobalLocalProjConfig.from_shapes``) for inconsistent shapes.
    """
    from ..any2pix.ip_projection import GlobalLocalImageProj, GlobalLocalProjConfig

    config = GlobalLocalProjConfig.from_shapes({k: tuple(v.shape) for k, v in image_proj_state.items()}, path)
    with torch.device("meta"):
        module = GlobalLocalImageProj(config, operations)
    module.load_state_dict(image_proj_state, strict=True, assign=True)
    return GlobalLocalProjection(module)
