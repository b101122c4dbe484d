"""IP-Adapter image projections (CLIP vision output -> image tokens), sized from their weights.

Parameter names match the released files' ``image_proj`` section so ``load_state_dict(strict=True)``
reads them unchanged (tencent-ailab/IP-Adapter ``ip_adapter/ip_adapter.py`` ``ImageProjModel``,
``ip_adapter/resampler.py`` ``Resampler``; ComfyUI_IPAdapter_plus ``image_proj_models.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as functional
from torch import nn

from ..operations import DEFAULT_OPERATIONS

# Head width of the Plus Resampler: tencent-ailab/IP-Adapter ``IPAdapterPlus.init_proj`` passes
# dim_head=64; diffusers reads heads as to_q.out_features // 64 the same way.
RESAMPLER_DIM_HEAD = 64


@dataclass(frozen=True)
class ImageProjConfig:
    clip_dim: int
    context_dim: int
    num_tokens: int

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, ...]]) -> ImageProjConfig:
        """``clip_dim``, ``context_dim``, ``num_tokens`` read from ``proj.weight`` and ``norm.weight``."""
        context_dim = shapes["norm.weight"][0]
        out_features, clip_dim = shapes["proj.weight"]
        if out_features % context_dim:
            raise ValueError(
                f"proj.weight has {out_features} outputs, not a multiple of the LayerNorm width {context_dim}"
            )
        return cls(clip_dim, context_dim, out_features // context_dim)


class ImageProjModel(nn.Module):
    """Base IP-Adapter projection: ``image_embeds [B, D_clip] -> [B, N, D_ctx]`` (Linear, reshape, LayerNorm)."""

    def __init__(self, config: ImageProjConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.context_dim = config.context_dim
        self.num_tokens = config.num_tokens
        self.proj = operations.Linear(config.clip_dim, config.num_tokens * config.context_dim)
        self.norm = operations.LayerNorm(config.context_dim)

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(image_embeds.to(self.proj.weight.dtype))  # [B, N*D_ctx]
        tokens = tokens.reshape(image_embeds.shape[0], self.num_tokens, self.context_dim)
        return self.norm(tokens)  # [B, N, D_ctx]


class PerceiverAttention(nn.Module):
    """Latents attend to ``[image features; latents]`` (Flamingo's perceiver resampler layer)."""

    def __init__(self, dim: int, inner_dim: int, dim_head: int = RESAMPLER_DIM_HEAD, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.heads = inner_dim // dim_head
        self.dim_head = dim_head
        self.norm1 = operations.LayerNorm(dim)
        self.norm2 = operations.LayerNorm(dim)
        self.to_q = operations.Linear(dim, inner_dim, bias=False)
        self.to_kv = operations.Linear(dim, 2 * inner_dim, bias=False)
        self.to_out = operations.Linear(inner_dim, dim, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.dim_head).transpose(1, 2)  # [B, H, L, d]

    def forward(self, features: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        features = self.norm1(features)  # [B, P, dim]
        latents = self.norm2(latents)  # [B, Nq, dim]
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([features, latents], dim=1)).chunk(2, dim=-1)
        out = functional.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v))
        batch, _, queries, _ = out.shape
        return self.to_out(out.transpose(1, 2).reshape(batch, queries, -1))


class FeedForward(nn.Sequential):
    """``LayerNorm -> Linear -> GELU -> Linear`` without biases (keys ``0``, ``1``, ``3``)."""

    def __init__(self, dim: int, inner_dim: int, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__(
            operations.LayerNorm(dim),
            operations.Linear(dim, inner_dim, bias=False),
            nn.GELU(),
            operations.Linear(inner_dim, dim, bias=False),
        )


@dataclass(frozen=True)
class ResamplerConfig:
    embedding_dim: int
    dim: int
    output_dim: int
    num_queries: int
    depth: int
    inner_dim: int
    ff_dim: int

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, ...]]) -> ResamplerConfig:
        """All sizes read from the tensors: depth from the ``layers.<i>`` count, heads from ``to_q``."""
        depth = len({k.split(".")[1] for k in shapes if k.startswith("layers.")})
        _, num_queries, dim = shapes["latents"]
        inner_dim = shapes["layers.0.0.to_q.weight"][0]
        if inner_dim % RESAMPLER_DIM_HEAD:
            raise ValueError(f"layers.0.0.to_q.weight has {inner_dim} outputs, not a multiple of 64-wide heads")
        return cls(
            embedding_dim=shapes["proj_in.weight"][1], dim=dim, output_dim=shapes["proj_out.weight"][0],
            num_queries=num_queries, depth=depth, inner_dim=inner_dim, ff_dim=shapes["layers.0.1.1.weight"][0],
        )


class Resampler(nn.Module):
    """IP-Adapter Plus projection: CLIP penultimate hidden states ``[B, P, D_vis] -> [B, Nq, D_ctx]``."""

    def __init__(self, config: ResamplerConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.num_tokens = config.num_queries
        self.context_dim = config.output_dim
        self.latents = nn.Parameter(torch.zeros(1, config.num_queries, config.dim))
        self.proj_in = operations.Linear(config.embedding_dim, config.dim)
        self.proj_out = operations.Linear(config.dim, config.output_dim)
        self.norm_out = operations.LayerNorm(config.output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(config.dim, config.inner_dim, operations=operations),
                           FeedForward(config.dim, config.ff_dim, operations=operations)])
            for _ in range(config.depth)
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        features = self.proj_in(hidden_states.to(self.proj_in.weight.dtype))  # [B, P, dim]
        latents = self.latents.expand(hidden_states.shape[0], -1, -1)  # [B, Nq, dim]
        for attention, feed_forward in self.layers:
            latents = attention(features, latents) + latents
            latents = feed_forward(latents) + latents
        return self.norm_out(self.proj_out(latents))  # [B, Nq, D_ctx]
