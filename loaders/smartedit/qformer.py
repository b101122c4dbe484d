"""SmartEdit's SD Q-Former: BLIP-2-style BERT layers over 77 learned queries (model/LLMSD_QFormerv01.py).

Queries only (word/position embeddings removed): `embeddings.LayerNorm(query_tokens)`, then per layer
self-attention (post-LN residual), cross-attention to the LLM's image-token states in the layers that
have it (0, 2, 4: `cross_attention_freq` 2), and the query FFN (`intermediate_query` / `output_query`,
post-LN residual). No attention masks (the reference passes none: all states attended).
State-dict keys are the release file's keys without the `sd_qformer.` prefix, plus `query_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..operations import DEFAULT_OPERATIONS

BERT_LAYER_NORM_EPS = 1e-12  # bert-base-uncased config, which the reference builds the Q-Former from
BERT_HEAD_DIM = 64  # bert-base-uncased: 768 wide, 12 heads


@dataclass(frozen=True)
class QFormerConfig:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    encoder_width: int
    num_queries: int
    cross_layers: tuple[int, ...]
    eps: float = BERT_LAYER_NORM_EPS

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, ...]], heads: int | None = None) -> QFormerConfig:
        """Keys without the `sd_qformer.` prefix plus `query_tokens`; heads default to width / 64 (BERT-base)."""
        _, num_queries, hidden = shapes["query_tokens"]
        layer_ids = {int(k.split(".")[2]) for k in shapes if k.startswith("encoder.layer.")}
        cross = tuple(sorted(i for i in layer_ids if f"encoder.layer.{i}.crossattention.self.key.weight" in shapes))
        encoder_width = shapes[f"encoder.layer.{cross[0]}.crossattention.self.key.weight"][1] if cross else hidden
        intermediate = shapes["encoder.layer.0.intermediate_query.dense.weight"][0]
        return cls(
            hidden=hidden, layers=len(layer_ids), heads=heads or max(1, hidden // BERT_HEAD_DIM),
            intermediate=intermediate, encoder_width=encoder_width, num_queries=num_queries, cross_layers=cross,
        )


class BertAttentionBlock(nn.Module):
    """`attention.self.{query,key,value}` + `attention.output.{dense,LayerNorm}` (post-LN residual)."""

    def __init__(self, config: QFormerConfig, kv_width: int, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.heads = config.heads
        self.self = nn.Module()
        self.self.query = operations.Linear(config.hidden, config.hidden)
        self.self.key = operations.Linear(kv_width, config.hidden)
        self.self.value = operations.Linear(kv_width, config.hidden)
        self.output = nn.Module()
        self.output.dense = operations.Linear(config.hidden, config.hidden)
        self.output.LayerNorm = operations.LayerNorm(config.hidden, eps=config.eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.heads

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, -1, h, d // h).transpose(1, 2)

        q, k, v = split(self.self.query(x)), split(self.self.key(context)), split(self.self.value(context))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        return self.output.LayerNorm(self.output.dense(out) + x)


class QFormerLayer(nn.Module):
    def __init__(self, config: QFormerConfig, has_cross: bool, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.attention = BertAttentionBlock(config, config.hidden, operations=operations)
        self.crossattention = BertAttentionBlock(config, config.encoder_width, operations=operations) if has_cross else None
        self.intermediate_query = nn.Module()
        self.intermediate_query.dense = operations.Linear(config.hidden, config.intermediate)
        self.output_query = nn.Module()
        self.output_query.dense = operations.Linear(config.intermediate, config.hidden)
        self.output_query.LayerNorm = operations.LayerNorm(config.hidden, eps=config.eps)

    def forward(self, x: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, x)
        if self.crossattention is not None:
            x = self.crossattention(x, states)
        ff = self.output_query.dense(F.gelu(self.intermediate_query.dense(x)))  # BERT "gelu" = exact erf GELU
        return self.output_query.LayerNorm(ff + x)


class QFormer(nn.Module):
    """LLM image-token states [B, N, D_llm] -> Q-Former output [B, 77, D_text]."""

    def __init__(self, config: QFormerConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.config = config
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_queries, config.hidden))
        self.embeddings = nn.Module()
        self.embeddings.LayerNorm = operations.LayerNorm(config.hidden, eps=config.eps)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(QFormerLayer(config, i in config.cross_layers, operations=operations) for i in range(config.layers))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        dtype = self.query_tokens.dtype
        states = states.to(dtype)
        x = self.embeddings.LayerNorm(self.query_tokens.expand(states.shape[0], -1, -1))
        for layer in self.encoder.layer:
            x = layer(x, states)
        return x
