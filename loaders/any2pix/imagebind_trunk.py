"""ImageBind's transformer trunk in eval mode, in plain torch with injectable layer classes.

Numerically as facebookresearch/ImageBind @ 3fcf5c9039de97f6ff5528ee4a9dce903c5979b3,
`imagebind/models/transformer.py` (`SimpleTransformer`, `BlockWithMasking`, `MultiheadAttention`) as
`imagebind/models/imagebind_model.py` `instantiate_trunk` builds it:

- optional LayerNorm(eps 1e-6) before the blocks (`pre_transformer_layer`; the vision trunk has it,
  the audio trunk does not);
- pre-norm blocks: `x + attn(norm_1(x))`, then `x + mlp(norm_2(x))`, LayerNorms with eps 1e-6
  (`_LAYER_NORM`), no layer scale; DropPath and dropout are identities in eval;
- MLP: Linear -> GELU (erf form, `nn.GELU()`) -> Linear, hidden width from the weights (4 x width);
- attention: `torch.nn.MultiheadAttention(bias=True, add_bias_kv=...)` with no mask. One packed input
  projection `[3 D, D]` split into q, k, v; with `add_bias_kv` (audio) the learned `bias_k`/`bias_v`
  `[1, 1, D]` are appended as one more key/value token after the projection; scaled dot product with
  scale 1/sqrt(head_dim); output projection.

The reference runs the trunk sequence-first (`b l d -> l b d`); the arithmetic per token is the same
batch-first, which is what this module uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

from ..operations import DEFAULT_OPERATIONS

TRUNK_NORM_EPS = 1e-6  # imagebind/models/transformer.py `_LAYER_NORM`, imagebind_model.py pre-transformer LayerNorm


@dataclass(frozen=True)
class TrunkConfig:
    """Sizes of one modality trunk; `width`, `blocks`, `mlp_hidden` and the two flags come from the weights."""

    width: int
    blocks: int
    heads: int  # not visible in the weights: from the constructor arguments (see imagebind_file.py)
    mlp_hidden: int
    pre_norm: bool  # `pre_transformer_layer.0` present (vision)
    bias_kv: bool  # `attn.bias_k` / `attn.bias_v` present (audio)

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


class TrunkAttention(nn.Module):
    """`nn.MultiheadAttention` self-attention without a mask, batch first.

    Submodules: `in_proj` (the file's `in_proj_weight`/`in_proj_bias`, [3 D, D] / [3 D]), `out_proj`;
    parameters `bias_k`, `bias_v` [1, 1, D] when `bias_kv`.
    """

    def __init__(self, config: TrunkConfig, operations: ModuleType) -> None:
        super().__init__()
        self.heads = config.heads
        d = config.width
        self.in_proj = operations.Linear(d, 3 * d, bias=True)
        self.out_proj = operations.Linear(d, d, bias=True)
        if config.bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, d))
            self.bias_v = nn.Parameter(torch.empty(1, 1, d))
        else:
            self.bias_k = self.bias_v = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, D] -> [B, L, D]."""
        b, length, d = x.shape
        q, k, v = self.in_proj(x).chunk(3, dim=-1)
        if self.bias_k is not None:
            # F.multi_head_attention_forward: cat([k, bias_k.repeat(1, bsz, 1)]) along the sequence
            k = torch.cat([k, self.bias_k.to(k).expand(b, 1, d)], dim=1)
            v = torch.cat([v, self.bias_v.to(v).expand(b, 1, d)], dim=1)
        h, hd = self.heads, d // self.heads
        q = q.view(b, length, h, hd).transpose(1, 2)
        k = k.reshape(b, -1, h, hd).transpose(1, 2)
        v = v.reshape(b, -1, h, hd).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, h, L, hd], scale 1/sqrt(hd)
        return self.out_proj(out.transpose(1, 2).reshape(b, length, d))


class TrunkMLP(nn.Module):
    def __init__(self, config: TrunkConfig, operations: ModuleType) -> None:
        super().__init__()
        self.fc1 = operations.Linear(config.width, config.mlp_hidden)
        self.fc2 = operations.Linear(config.mlp_hidden, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TrunkBlock(nn.Module):
    """`BlockWithMasking` without layer scale: `norm_1`, `attn`, `norm_2`, `mlp`."""

    def __init__(self, config: TrunkConfig, operations: ModuleType) -> None:
        super().__init__()
        self.norm_1 = operations.LayerNorm(config.width, eps=TRUNK_NORM_EPS)
        self.attn = TrunkAttention(config, operations)
        self.norm_2 = operations.LayerNorm(config.width, eps=TRUNK_NORM_EPS)
        self.mlp = TrunkMLP(config, operations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_1(x))
        return x + self.mlp(self.norm_2(x))


class ImageBindTrunk(nn.Module):
    """`SimpleTransformer` in eval: optional `pre_norm`, then `blocks`; tokens [B, L, D] -> [B, L, D]."""

    def __init__(self, config: TrunkConfig, operations: ModuleType = DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.config = config
        self.pre_norm = operations.LayerNorm(config.width, eps=TRUNK_NORM_EPS) if config.pre_norm else None
        self.blocks = nn.ModuleList(TrunkBlock(config, operations) for _ in range(config.blocks))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.pre_norm(tokens) if self.pre_norm is not None else tokens
        for block in self.blocks:
            x = block(x)
        return x
