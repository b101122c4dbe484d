"""GPT-2 body (`GPT2Model` without the token embedding use) in plain torch, numerically as transformers
4.34.1 `models/gpt2/modeling_gpt2.py`: learned positions added to `inputs_embeds`, pre-LN blocks, causal
self-attention scaled by 1/sqrt(head_dim), MLP with the config's activation (GPT-2: gelu_new), final `ln_f`.

The InstructAny2Pix prior runs it on `inputs_embeds` with an all-ones attention mask (no padding), so only the
causal mask applies. GPT-2's `Conv1D` stores weights as [in, out]; the loader transposes them into `Linear`s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..operations import DEFAULT_OPERATIONS
from .activations import activation

GPT2_MEDIUM_HEADS = 16  # gpt2-medium config.json n_head (heads cannot be read from shapes)


@dataclass(frozen=True)
class GPT2Config:
    width: int  # n_embd
    layers: int  # n_layer
    heads: int  # n_head
    inner: int  # n_inner (4 * n_embd when null)
    positions: int  # n_positions
    eps: float = 1e-5  # layer_norm_epsilon
    act: str = "gelu_new"  # activation_function
    scale_attn_weights: bool = True
    scale_by_inverse_layer_idx: bool = False

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, ...]], prefix: str, config: dict | None) -> GPT2Config:
        """Sizes from `<prefix>wpe.weight`, `h.<i>.mlp.c_fc.weight`; heads/eps/activation from a GPT2Config dict
        (`gpt2-medium/config.json`) when given, else gpt2-medium's."""
        config = config or {}
        positions, width = shapes[prefix + "wpe.weight"]
        layers = 1 + max(int(k[len(prefix):].split(".")[1]) for k in shapes if k.startswith(prefix + "h."))
        inner = shapes[prefix + "h.0.mlp.c_fc.weight"][1]
        return cls(
            width=width, layers=layers, heads=int(config.get("n_head", GPT2_MEDIUM_HEADS)), inner=inner,
            positions=positions, eps=float(config.get("layer_norm_epsilon", 1e-5)),
            act=str(config.get("activation_function", "gelu_new")),
            scale_attn_weights=bool(config.get("scale_attn_weights", True)),
            scale_by_inverse_layer_idx=bool(config.get("scale_attn_by_inverse_layer_idx", False)),
        )


class GPT2Attention(nn.Module):
    def __init__(self, config: GPT2Config, layer: int, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.heads = config.heads
        self.c_attn = operations.Linear(config.width, 3 * config.width)
        self.c_proj = operations.Linear(config.width, config.width)
        head_dim = config.width // config.heads
        scale = head_dim**-0.5 if config.scale_attn_weights else 1.0
        self.scale = scale / (layer + 1) if config.scale_by_inverse_layer_idx else scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.c_proj(out.transpose(1, 2).reshape(b, t, d))


class GPT2MLP(nn.Module):
    def __init__(self, config: GPT2Config, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.c_fc = operations.Linear(config.width, config.inner)
        self.c_proj = operations.Linear(config.inner, config.width)
        self.act = activation(config.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class GPT2Block(nn.Module):
    def __init__(self, config: GPT2Config, layer: int, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.ln_1 = operations.LayerNorm(config.width, eps=config.eps)
        self.attn = GPT2Attention(config, layer, operations)
        self.ln_2 = operations.LayerNorm(config.width, eps=config.eps)
        self.mlp = GPT2MLP(config, operations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.ln_1(x)) + x
        return x + self.mlp(self.ln_2(x))


class GPT2Body(nn.Module):
    """Keys as GPT2Model's minus `wte` (unused with inputs_embeds): `wpe.weight`, `h.<i>.*`, `ln_f.*`."""

    def __init__(self, config: GPT2Config, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.config = config
        self.wpe = operations.Embedding(config.positions, config.width)
        self.h = nn.ModuleList(GPT2Block(config, i, operations) for i in range(config.layers))
        self.ln_f = operations.LayerNorm(config.width, eps=config.eps)

    def forward(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """inputs_embeds [B, T, W] -> last_hidden_state [B, T, W] (attention mask all ones)."""
        t = inputs_embeds.shape[1]
        if t > self.config.positions:
            raise ValueError(f"GPT-2 input of {t} positions; the prior has {self.config.positions}")
        positions = torch.arange(t, device=inputs_embeds.device)
        x = inputs_embeds + self.wpe(positions)[None].to(inputs_embeds.dtype)
        for block in self.h:
            x = block(x)
        return self.ln_f(x)


def conv1d_to_linear(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """GPT-2 file keys `<prefix>...` -> GPT2Body keys; Conv1D [in, out] weights transposed to Linear [out, in]."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(prefix) or key.startswith(prefix + "wte.") or key.endswith(".attn.bias") \
                or key.endswith(".attn.masked_bias"):
            continue
        name = key[len(prefix):]
        conv = name.endswith(".weight") and any(s in name for s in (".c_attn.", ".c_proj.", ".c_fc."))
        out[name] = value.t().contiguous() if conv else value
    return out
