"""IP-Adapter image projections (CLIP vision output -> image tokens), sized from their weights.

Parameter names match the released files' ``image_proj`` section so ``load_state_dict(strict=True)``
reads them unchanged (tencent-ailab/IP-Adapter ``ip_adapter/ip_adapter.py`` ``ImageProjModel``,
``ip_adapter/resampler.py`` ``Resampler``; ComfyUI_IPAdapter_plus ``image_proj_models.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as functional
from torch import nn

# Head width of the Plus Resampler: tencent-ailab/IP-Adapter ``IPAdapterPlus.init_proj`` passes
# dim_head=64; diffusers reads heads as to_q.out_features // 64 the same way.
RESAMPLER_DIM_HEAD = 64


class ImageProjModel(nn.Module):
    """Base IP-Adapter projection: ``image_embeds [B, D_clip] -> [B, N, D_ctx]`` (Linear, reshape, LayerNorm)."""

    def __init__(self, clip_dim: int, context_dim: int, num_tokens: int) -> None:
        super().__init__()
        self.context_dim = context_dim
        self.num_tokens = num_tokens
        self.proj = nn.Linear(clip_dim, num_tokens * context_dim)
        self.norm = nn.LayerNorm(context_dim)

    @classmethod
    def sizes_from_state_dict(cls, state: dict[str, torch.Tensor]) -> dict[str, int]:
        """``clip_dim``, ``context_dim``, ``num_tokens`` read from ``proj.weight`` and ``norm.weight``."""
        context_dim = state["norm.weight"].shape[0]
        out_features, clip_dim = state["proj.weight"].shape
        if out_features % context_dim:
            raise ValueError(
                f"proj.weight has {out_features} outputs, not a multiple of the LayerNorm width {context_dim}"
            )
        return {"clip_dim": clip_dim, "context_dim": context_dim, "num_tokens": out_features // context_dim}

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(image_embeds.to(self.proj.weight.dtype))  # [B, N*D_ctx]
        tokens = tokens.reshape(image_embeds.shape[0], self.num_tokens, self.context_dim)
        return self.norm(tokens)  # [B, N, D_ctx]


class PerceiverAttention(nn.Module):
    """Latents attend to ``[image features; latents]`` (Flamingo's perceiver resampler layer)."""

    def __init__(self, dim: int, inner_dim: int, dim_head: int = RESAMPLER_DIM_HEAD) -> None:
        super().__init__()
        self.heads = inner_dim // dim_head
        self.dim_head = dim_head
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner_dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner_dim, bias=False)
        self.to_out = nn.Linear(inner_dim, dim, bias=False)

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

    def __init__(self, dim: int, inner_dim: int) -> None:
        super().__init__(
            nn.LayerNorm(dim),
            nn.Linear(dim, inner_dim, bias=False),
            nn.GELU(),
            nn.Linear(inner_dim, dim, bias=False),
        )


class Resampler(nn.Module):
    """IP-Adapter Plus projection: CLIP penultimate hidden states ``[B, P, D_vis] -> [B, Nq, D_ctx]``."""

    def __init__(
        self, embedding_dim: int, dim: int, output_dim: int, num_queries: int, depth: int, inner_dim: int, ff_dim: int
    ) -> None:
        super().__init__()
        self.num_tokens = num_queries
        self.context_dim = output_dim
        self.latents = nn.Parameter(torch.zeros(1, num_queries, dim))
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, inner_dim), FeedForward(dim, ff_dim)]) for _ in range(depth)
        )

    @classmethod
    def sizes_from_state_dict(cls, state: dict[str, torch.Tensor]) -> dict[str, int]:
        """All sizes read from the tensors: depth from the ``layers.<i>`` count, heads from ``to_q``."""
        depth = len({k.split(".")[1] for k in state if k.startswith("layers.")})
        _, num_queries, dim = state["latents"].shape
        inner_dim = state["layers.0.0.to_q.weight"].shape[0]
        if inner_dim % RESAMPLER_DIM_HEAD:
            raise ValueError(f"layers.0.0.to_q.weight has {inner_dim} outputs, not a multiple of 64-wide heads")
        return {
            "embedding_dim": state["proj_in.weight"].shape[1],
            "dim": dim,
            "output_dim": state["proj_out.weight"].shape[0],
            "num_queries": num_queries,
            "depth": depth,
            "inner_dim": inner_dim,
            "ff_dim": state["layers.0.1.1.weight"].shape[0],
        }

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        features = self.proj_in(hidden_states.to(self.proj_in.weight.dtype))  # [B, P, dim]
        latents = self.latents.expand(hidden_states.shape[0], -1, -1)  # [B, Nq, dim]
        for attention, feed_forward in self.layers:
            latents = attention(features, latents) + latents
            latents = feed_forward(latents) + latents
        return self.norm_out(self.proj_out(latents))  # [B, Nq, D_ctx]
