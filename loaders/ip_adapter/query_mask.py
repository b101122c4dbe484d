"""An image-space mask turned into per-query-row weights ``[B, Lq]`` for one attn2 layer.

An attn2 layer sees the latent downsampled 0..3 times (each stride-2 conv rounds up: ``ceil(h/2)``),
flattened row-major to ``Lq = h_l * w_l`` queries. ComfyUI_IPAdapter_plus (``CrossAttentionPatch.py``)
and diffusers (``IPAdapterMaskProcessor.downsample``) both resize the mask to that grid and use one
weight per query row; here the grid is found exactly by halving the latent size until it matches
``Lq`` (no rounding guesses), and the resize is bilinear as in IPAdapter_plus.
"""

from __future__ import annotations

import torch
import torch.nn.functional as functional


def query_grid(num_queries: int, latent_height: int, latent_width: int) -> tuple[int, int]:
    """``(h_l, w_l)`` with ``h_l * w_l == num_queries`` reached by halving (rounding up) the latent size."""
    height, width = latent_height, latent_width
    while height * width > num_queries and (height > 1 or width > 1):
        height, width = (height + 1) // 2, (width + 1) // 2
    if height * width != num_queries:
        raise ValueError(
            f"{num_queries} attention queries do not match a downsampling of the {latent_height}x{latent_width} "
            "latent; pass the latent size this UNet call was made with (extra_options['original_shape'])"
        )
    return height, width


def mask_to_query_weights(
    mask: torch.Tensor, num_queries: int, latent_height: int, latent_width: int
) -> torch.Tensor:
    """``mask [H, W]`` or ``[B, H, W]`` (any size, values in [0, 1]) -> ``[B or 1, num_queries]``."""
    if mask.dim() == 2:
        mask = mask.unsqueeze(0)
    if mask.dim() != 3:
        raise ValueError(f"mask must be [H, W] or [B, H, W], found {tuple(mask.shape)}")
    height, width = query_grid(num_queries, latent_height, latent_width)
    resized = functional.interpolate(mask.unsqueeze(1).float(), size=(height, width), mode="bilinear")
    return resized.reshape(mask.shape[0], height * width)
