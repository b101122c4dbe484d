"""SmartEdit's Bidirectional Interaction Module: SAM's TwoWayTransformer plus SmartEdit's heads.

Reference: TencentARC/SmartEdit `model/two_way_transformer.py` (SAM mask-decoder transformer) and
`SmartEdit_model.init_BIM_module` / `inference_BIM_module` (model/DS_SmartEdit_model.py). State-dict keys
are the release `modulate-*/adapter_model.bin` keys: `modulate_head.*`, `modulate_transformer.*`,
`pe_layer.positional_encoding_gaussian_matrix`, `dimension_reduction_head_zeroconv.*`,
`dimension_reduction_head_qformer_out.*`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..operations import DEFAULT_OPERATIONS

BIM_HEADS = 8  # SmartEdit init_BIM_module: TwoWayTransformer(num_heads=8)


@dataclass(frozen=True)
class BIMConfig:
    embed: int  # BIM width (= CLIP width: 1024 for ViT-L)
    text: int  # Q-Former / CLIP-text width (768)
    depth: int
    mlp: int
    internal: int  # cross-attention width (embed / attention_downsample_rate 2)
    unet_channels: int  # conv_in width of the UNet (320 for SD1.5)
    heads: int = BIM_HEADS

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, ...]]) -> BIMConfig:
        """Sizes from the BIM tensors' shapes (keys of the modulate-* file)."""
        embed, text = shapes["modulate_head.weight"]
        depth = len({k.split(".")[2] for k in shapes if k.startswith("modulate_transformer.layers.")})
        return cls(
            embed=embed,
            text=text,
            depth=depth,
            mlp=shapes["modulate_transformer.layers.0.mlp.lin1.weight"][0],
            internal=shapes["modulate_transformer.final_attn_token_to_image.q_proj.weight"][0],
            unet_channels=shapes["dimension_reduction_head_zeroconv.weight"][0],
        )


class Attention(nn.Module):
    """SAM Attention: separate projections to `internal` width, heads, softmax(QK^T/sqrt(d)) V, out_proj."""

    def __init__(self, embed: int, internal: int, heads: int, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = operations.Linear(embed, internal)
        self.k_proj = operations.Linear(embed, internal)
        self.v_proj = operations.Linear(embed, internal)
        self.out_proj = operations.Linear(internal, embed)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (output [B, Nq, embed], attention probabilities [B, heads, Nq, Nk])."""

        def split(x: torch.Tensor) -> torch.Tensor:
            b, n, c = x.shape
            return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

        q, k, v = split(self.q_proj(q)), split(self.k_proj(k)), split(self.v_proj(v))
        attn = torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]), dim=-1)
        out = (attn @ v).transpose(1, 2)
        return self.out_proj(out.reshape(out.shape[0], out.shape[1], -1)), attn


class MLPBlock(nn.Module):
    def __init__(self, embed: int, mlp: int, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.lin1 = operations.Linear(embed, mlp)
        self.lin2 = operations.Linear(mlp, embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(torch.relu(self.lin1(x)))  # TwoWayTransformer default activation nn.ReLU


class TwoWayBlock(nn.Module):
    def __init__(self, config: BIMConfig, skip_first_layer_pe: bool, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.self_attn = Attention(config.embed, config.embed, config.heads, operations=operations)
        self.norm1 = operations.LayerNorm(config.embed)
        self.cross_attn_token_to_image = Attention(config.embed, config.internal, config.heads, operations=operations)
        self.norm2 = operations.LayerNorm(config.embed)
        self.mlp = MLPBlock(config.embed, config.mlp, operations=operations)
        self.norm3 = operations.LayerNorm(config.embed)
        self.norm4 = operations.LayerNorm(config.embed)
        self.cross_attn_image_to_token = Attention(config.embed, config.internal, config.heads, operations=operations)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries, keys, query_pe, key_pe):
        if self.skip_first_layer_pe:
            # SAM: the first block's self-attention has no PE and no residual
            queries = self.self_attn(queries, queries, queries)[0]
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)[0]
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys)[0])
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries)[0])
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, config: BIMConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TwoWayBlock(config, skip_first_layer_pe=(i == 0), operations=operations) for i in range(config.depth))
        self.final_attn_token_to_image = Attention(config.embed, config.internal, config.heads, operations=operations)
        self.norm_final_attn = operations.LayerNorm(config.embed)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, points: torch.Tensor):
        """image, image_pe [B, C, h, w]; points [B, N, C] -> (queries [B, N, C], keys [B, h*w, C],
        final token-to-image attention [B, heads, N, h*w])."""
        keys = image.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = points
        for layer in self.layers:
            queries, keys = layer(queries, keys, points, key_pe)
        attn_out, attn = self.final_attn_token_to_image(queries + points, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn_out), keys, attn


class PositionEmbeddingRandom(nn.Module):
    """SAM random-Fourier position encoding: buffer `positional_encoding_gaussian_matrix` [2, C/2]."""

    def __init__(self, feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.zeros(2, feats))

    def forward(self, h: int, w: int) -> torch.Tensor:
        """[C, h, w]: coords ((x+0.5)/w, (y+0.5)/h) -> 2c-1 -> @ matrix -> 2*pi -> cat(sin, cos)."""
        matrix = self.positional_encoding_gaussian_matrix
        grid = torch.ones((h, w), device=matrix.device, dtype=matrix.dtype)
        y = (grid.cumsum(dim=0) - 0.5) / h
        x = (grid.cumsum(dim=1) - 0.5) / w
        coords = 2 * torch.stack([x, y], dim=-1) - 1
        coords = 2 * math.pi * (coords @ matrix)
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1).permute(2, 0, 1)


class BIM(nn.Module):
    """The BIM's modules, named as in the release file."""

    def __init__(self, config: BIMConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.config = config
        self.modulate_head = operations.Linear(config.text, config.embed)
        self.modulate_transformer = TwoWayTransformer(config, operations=operations)
        self.pe_layer = PositionEmbeddingRandom(config.embed // 2)
        self.dimension_reduction_head_zeroconv = operations.Conv2d(config.embed, config.unet_channels, kernel_size=1)
        self.dimension_reduction_head_qformer_out = operations.Linear(config.embed, config.text)
