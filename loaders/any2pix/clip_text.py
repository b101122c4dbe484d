"""CLIP text transformer (`CLIPTextModel`'s `text_model`) in plain torch, numerically as transformers 4.34.1
`models/clip/modeling_clip.py`: token + learned position embeddings, pre-LN causal self-attention
(queries scaled by head_dim^-0.5), MLP with the config's activation, `final_layer_norm`; the output is the
last hidden state (the InstructAny2Pix prior's `CLIPTextModelHiddenState` returns `model(...)[0]`).

Heads cannot be read from shapes: they come from the CLIP config (`text_config.num_attention_heads`) when
given, else head_dim 64 (every OpenAI/LAION CLIP text tower: ViT-L 768/12, ViT-H 1024/16, bigG 1280/20).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..operations import DEFAULT_OPERATIONS
from .activations import activation

CLIP_HEAD_DIM = 64


@dataclass(frozen=True)
class ClipTextConfig:
    width: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    positions: int
    eps: float = 1e-5
    act: str = "gelu"  # laion/CLIP-ViT-H-14-laion2B-s32B-b79K config.json text_config.hidden_act

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, ...]], prefix: str, text_config: dict | None) -> ClipTextConfig:
        """Sizes from `<prefix>text_model.*` shapes; heads/eps/activation from a CLIP `text_config` dict."""
        text_config = text_config or {}
        vocab, width = shapes[prefix + "text_model.embeddings.token_embedding.weight"]
        positions = shapes[prefix + "text_model.embeddings.position_embedding.weight"][0]
        layer_prefix = prefix + "text_model.encoder.layers."
        layers = 1 + max(int(k[len(layer_prefix):].split(".")[0]) for k in shapes if k.startswith(layer_prefix))
        intermediate = shapes[layer_prefix + "0.mlp.fc1.weight"][0]
        return cls(
            width=width, layers=layers, heads=int(text_config.get("num_attention_heads", max(1, width // CLIP_HEAD_DIM))),
            intermediate=intermediate, vocab=vocab, positions=positions,
            eps=float(text_config.get("layer_norm_eps", 1e-5)), act=str(text_config.get("hidden_act", "gelu")),
        )


class ClipAttention(nn.Module):
    def __init__(self, config: ClipTextConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.heads = config.heads
        self.q_proj = operations.Linear(config.width, config.width)
        self.k_proj = operations.Linear(config.width, config.width)
        self.v_proj = operations.Linear(config.width, config.width)
        self.out_proj = operations.Linear(config.width, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (p(x).view(b, t, self.heads, d // self.heads).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class ClipMLP(nn.Module):
    def __init__(self, config: ClipTextConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.fc1 = operations.Linear(config.width, config.intermediate)
        self.fc2 = operations.Linear(config.intermediate, config.width)
        self.act = activation(config.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ClipLayer(nn.Module):
    def __init__(self, config: ClipTextConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.layer_norm1 = operations.LayerNorm(config.width, eps=config.eps)
        self.self_attn = ClipAttention(config, operations)
        self.layer_norm2 = operations.LayerNorm(config.width, eps=config.eps)
        self.mlp = ClipMLP(config, operations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class ClipEmbeddings(nn.Module):
    def __init__(self, config: ClipTextConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.token_embedding = operations.Embedding(config.vocab, config.width)
        self.position_embedding = operations.Embedding(config.positions, config.width)


class ClipEncoder(nn.Module):
    def __init__(self, config: ClipTextConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ClipLayer(config, operations) for _ in range(config.layers))


class ClipTextTransformer(nn.Module):
    """Keys as transformers' `CLIPTextModel.text_model`: `embeddings.*`, `encoder.layers.<i>.*`, `final_layer_norm.*`."""

    def __init__(self, config: ClipTextConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.config = config
        self.embeddings = ClipEmbeddings(config, operations)
        self.encoder = ClipEncoder(config, operations)
        self.final_layer_norm = operations.LayerNorm(config.width, eps=config.eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids [B, T] (no padding) -> last hidden state [B, T, W]."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embeddings.token_embedding(input_ids) + self.embeddings.position_embedding(positions)[None]
        for layer in self.encoder.layers:
            x = layer(x)
        return self.final_layer_norm(x)
