"""Tiny random IP-Adapter and InsightEdit IAA files in the real key layouts.

IP-Adapter SD1.5 files (h94/IP-Adapter ``models/ip-adapter_sd15.bin`` / ``.safetensors``) hold two
sections: ``image_proj`` (the image projection) and ``ip_adapter`` (``<2n+1>.to_k_ip.weight`` /
``<2n+1>.to_v_ip.weight`` for the n-th UNet cross-attention layer, in diffusers'
``unet.attn_processors`` order). ``.bin`` files are ``torch.save`` of the nested dict
``{"image_proj": {...}, "ip_adapter": {...}}``; ``.safetensors`` files are flat, keys prefixed with
the section name (``image_proj.proj.weight``), as diffusers' ``load_ip_adapter`` and
ComfyUI_IPAdapter_plus' ``ipadapter_model_loader`` split them.

Projections (tencent-ailab/IP-Adapter ``ip_adapter/ip_adapter.py``, ``resampler.py``):
- basic: ``ImageProjModel`` = ``proj`` Linear(clip_dim -> 4*context_dim) + ``norm`` LayerNorm(context_dim);
- plus: ``Resampler`` (depth 4, dim_head 64, 16 learned queries) over CLIP penultimate hidden states.

The IAA file follows the layout documented in ``lmm_edit.loaders.ip_adapter.iaa``: a ``mapper``
section (MLP, ``mapper.<2i>.weight/bias``) in front of an ``image_proj`` section shaped like the basic
IP-Adapter's, plus the same ``ip_adapter`` section.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import torch
from safetensors.torch import save_file

# diffusers block_out_channels of the tiny SD1.5-layout UNet used by the parity tests: four levels,
# cross-attention on the first three, 2 res blocks down / 3 up per level, as SD1.5 (16 layers).
TINY_SD15_BLOCK_OUT_CHANNELS = (32, 48, 64, 64)
TINY_CONTEXT_DIM = 32

TINY_SD15_UNET_CONFIG = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    block_out_channels=TINY_SD15_BLOCK_OUT_CHANNELS,
    layers_per_block=2,
    cross_attention_dim=TINY_CONTEXT_DIM,
    attention_head_dim=8,  # diffusers' name for the number of heads (8 in SD1.5)
    norm_num_groups=16,
)

# The same UNet as ComfyUI's detected unet_config describes it (comfy/model_detection.py).
TINY_SD15_LDM_UNET_CONFIG = dict(
    model_channels=16,
    channel_mult=[2, 3, 4, 4],
    num_res_blocks=[2, 2, 2, 2],
    transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
    transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    transformer_depth_middle=1,
    context_dim=TINY_CONTEXT_DIM,
)

# Real SD1.5 (CompVis v1-inference.yaml) in the same terms, for layout tests.
SD15_LDM_UNET_CONFIG = dict(
    model_channels=320,
    channel_mult=[1, 2, 4, 4],
    num_res_blocks=[2, 2, 2, 2],
    transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
    transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    transformer_depth_middle=1,
    context_dim=768,
)

# SDXL base (Stability-AI/generative-models configs/inference/sd_xl_base.yaml) after ComfyUI's detection.
SDXL_LDM_UNET_CONFIG = dict(
    model_channels=320,
    channel_mult=[1, 2, 4],
    num_res_blocks=[2, 2, 2],
    transformer_depth=[0, 0, 2, 2, 10, 10],
    transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
    transformer_depth_middle=10,
    context_dim=2048,
)


def sd15_layer_channels(block_out_channels: Sequence[int] = TINY_SD15_BLOCK_OUT_CHANNELS) -> tuple[int, ...]:
    """Channels of the 16 cross-attention layers of an SD1.5-layout UNet, in diffusers' order
    (down 0,0,1,1,2,2; up 1,1,1,2,2,2,3,3,3 with reversed channels; mid)."""
    c = list(block_out_channels)
    down = [c[0], c[0], c[1], c[1], c[2], c[2]]
    up = [c[2]] * 3 + [c[1]] * 3 + [c[0]] * 3
    return tuple(down + up + [c[3]])


def _linear(out_features: int, in_features: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(out_features, in_features, generator=generator) / in_features**0.5


def _bias(size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(size, generator=generator) * 0.1


def _norm(size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return 1.0 + torch.randn(size, generator=generator) * 0.1, torch.randn(size, generator=generator) * 0.1


def ip_layers_section(
    layer_channels: Sequence[int], context_dim: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """``<2n+1>.to_k_ip.weight`` / ``<2n+1>.to_v_ip.weight`` ``[C_n, context_dim]`` per layer n."""
    section = {}
    for n, channels in enumerate(layer_channels):
        section[f"{2 * n + 1}.to_k_ip.weight"] = _linear(channels, context_dim, generator)
        section[f"{2 * n + 1}.to_v_ip.weight"] = _linear(channels, context_dim, generator)
    return section


def basic_image_proj_section(
    clip_dim: int, context_dim: int, num_tokens: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """ImageProjModel: ``proj`` [num_tokens*context_dim, clip_dim] + ``norm`` [context_dim]."""
    norm_weight, norm_bias = _norm(context_dim, generator)
    return {
        "proj.weight": _linear(num_tokens * context_dim, clip_dim, generator),
        "proj.bias": _bias(num_tokens * context_dim, generator),
        "norm.weight": norm_weight,
        "norm.bias": norm_bias,
    }


def resampler_image_proj_section(
    embedding_dim: int,
    dim: int,
    output_dim: int,
    generator: torch.Generator,
    num_queries: int = 16,
    depth: int = 4,
    heads: int = 1,
    dim_head: int = 64,
    ff_mult: int = 4,
) -> dict[str, torch.Tensor]:
    """IP-Adapter Plus Resampler keys as released (``layers.<i>.0`` PerceiverAttention, ``layers.<i>.1`` FFN)."""
    inner = heads * dim_head
    section = {
        "latents": torch.randn(1, num_queries, dim, generator=generator) / dim**0.5,
        "proj_in.weight": _linear(dim, embedding_dim, generator),
        "proj_in.bias": _bias(dim, generator),
        "proj_out.weight": _linear(output_dim, dim, generator),
        "proj_out.bias": _bias(output_dim, generator),
    }
    section["norm_out.weight"], section["norm_out.bias"] = _norm(output_dim, generator)
    for i in range(depth):
        p = f"layers.{i}."
        section[p + "0.norm1.weight"], section[p + "0.norm1.bias"] = _norm(dim, generator)
        section[p + "0.norm2.weight"], section[p + "0.norm2.bias"] = _norm(dim, generator)
        section[p + "0.to_q.weight"] = _linear(inner, dim, generator)
        section[p + "0.to_kv.weight"] = _linear(2 * inner, dim, generator)
        section[p + "0.to_out.weight"] = _linear(dim, inner, generator)
        section[p + "1.0.weight"], section[p + "1.0.bias"] = _norm(dim, generator)
        section[p + "1.1.weight"] = _linear(dim * ff_mult, dim, generator)
        section[p + "1.3.weight"] = _linear(dim, dim * ff_mult, generator)
    return section


def mapper_section(dims: Sequence[int], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """IAA mapper MLP ``dims[0] -> ... -> dims[-1]``: ``<2i>.weight/bias`` (GELU at the odd indices)."""
    section = {}
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        section[f"{2 * i}.weight"] = _linear(d_out, d_in, generator)
        section[f"{2 * i}.bias"] = _bias(d_out, generator)
    return section


def tiny_ip_adapter_state(
    variant: str = "basic",
    *,
    layer_channels: Sequence[int] | None = None,
    context_dim: int = TINY_CONTEXT_DIM,
    clip_dim: int = 24,
    seed: int = 0,
) -> dict[str, dict[str, torch.Tensor]]:
    """Nested ``{"image_proj": ..., "ip_adapter": ...}`` of a tiny SD1.5 IP-Adapter.

    variant "basic": 4 tokens from CLIP ``image_embeds`` [B, clip_dim];
    variant "plus": 16 tokens from CLIP penultimate hidden states [B, 257, clip_dim].
    """
    generator = torch.Generator().manual_seed(seed)
    channels = sd15_layer_channels() if layer_channels is None else tuple(layer_channels)
    if variant == "basic":
        image_proj = basic_image_proj_section(clip_dim, context_dim, 4, generator)
    elif variant == "plus":
        image_proj = resampler_image_proj_section(clip_dim, context_dim, context_dim, generator)
    else:
        raise ValueError(f"unknown IP-Adapter variant {variant!r}; use 'basic' or 'plus'")
    return {"image_proj": image_proj, "ip_adapter": ip_layers_section(channels, context_dim, generator)}


def tiny_iaa_state(
    *,
    llm_dim: int = 48,
    mapper_dims: Sequence[int] = (40,),
    clip_dim: int = 24,
    num_tokens: int = 4,
    layer_channels: Sequence[int] | None = None,
    context_dim: int = TINY_CONTEXT_DIM,
    seed: int = 0,
) -> dict[str, dict[str, torch.Tensor]]:
    """Nested ``{"mapper": ..., "image_proj": ..., "ip_adapter": ...}`` of a tiny InsightEdit IAA.

    mapper: llm_dim -> *mapper_dims -> clip_dim; image_proj: clip_dim -> num_tokens x context_dim.
    """
    generator = torch.Generator().manual_seed(seed)
    channels = sd15_layer_channels() if layer_channels is None else tuple(layer_channels)
    return {
        "mapper": mapper_section([llm_dim, *mapper_dims, clip_dim], generator),
        "image_proj": basic_image_proj_section(clip_dim, context_dim, num_tokens, generator),
        "ip_adapter": ip_layers_section(channels, context_dim, generator),
    }


def tiny_global_local_adapter_state(
    layer_channels: Sequence[int], *, context_dim: int, clip_dim: int, num_tokens: int = 4, seed: int = 0
) -> dict[str, dict[str, torch.Tensor]]:
    """Nested ``{"image_proj": ..., "ip_adapter": ...}`` of InstructAny2Pix's ``ip_adapter_global_local_2_view``
    layout: the basic projection plus ``raw_embed`` [2, context_dim] (global, local view), N(0, 0.5) as the
    reference fixture draws it."""
    generator = torch.Generator().manual_seed(seed)
    image_proj = basic_image_proj_section(clip_dim, context_dim, num_tokens, generator)
    image_proj["raw_embed"] = torch.randn(2, context_dim, generator=generator) * 0.5
    return {"image_proj": image_proj, "ip_adapter": ip_layers_section(layer_channels, context_dim, generator)}


def write_adapter_file(
    state: dict[str, dict[str, torch.Tensor]], path: pathlib.Path, dtype: torch.dtype | None = None
) -> pathlib.Path:
    """Write ``state`` as the release formats do: ``.bin`` nested, ``.safetensors`` flat with prefixes."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if dtype is not None else t

    if path.suffix == ".safetensors":
        flat = {
            f"{section}.{key}": cast(t).contiguous() for section, tensors in state.items() for key, t in tensors.items()
        }
        save_file(flat, str(path))
    elif path.suffix in (".bin", ".pt", ".pth"):
        torch.save({section: {k: cast(t) for k, t in tensors.items()} for section, tensors in state.items()}, path)
    else:
        raise ValueError(f"write_adapter_file: unknown suffix {path.suffix!r}; use .safetensors or .bin")
    return path
