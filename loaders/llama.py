"""LLaMA decoder shared by the model families, numerically as transformers 4.28's LlamaModel (SmartEdit: LLaMA-1)
or, with `LlamaConfig(norm_output="input")`, as 4.34's (InstructAny2Pix: LLaMA-2 / Vicuna-1.5).

transformers 4.28.1 is SmartEdit's pin: rotate-half RoPE with cos/sin built in fp32 and cast to the
activation dtype, RMSNorm computed in fp32, softmax in fp32, no biases, SiLU-gated MLP. Written here in
plain torch (instead of a transformers class) so the numerics do not move with the installed
transformers version, and so decoding can use a preallocated KV cache.

transformers 4.34.1 (jacklishufan/InstructAny2Pix's pin) differs from 4.28.1 in three places
(`models/llama/modeling_llama.py` of both releases):
- `LlamaRMSNorm.forward` casts the normalised fp32 activations back to the INPUT dtype (4.28: to the
  weight's dtype when that is fp16/bf16): `norm_output="input"` vs `"weight"`. Equal when the weight and
  the activations share a dtype; different when, e.g., fp16-stored norms meet fp32 activations.
- `LlamaRotaryEmbedding` takes its base from `config.rope_theta` (4.28: fixed 10000): `rope_theta`.
- `inv_freq` is a non-persistent buffer (not in the 4.34 weight files): loaders compute it with
  `rope_inv_freq(head_dim, rope_theta)`.
LLaMA-2's `rms_norm_eps` (1e-5) comes from config.json like LLaMA-1's (1e-6).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .operations import DEFAULT_OPERATIONS

ROPE_THETA = 10000.0  # LLaMA-1 (transformers 4.28 LlamaRotaryEmbedding base)


@dataclass(frozen=True)
class LlamaConfig:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    rms_eps: float = 1e-6  # LLaMA-1 / LLaVA-1.1 config rms_norm_eps
    rope_theta: float = ROPE_THETA  # config.json rope_theta (transformers >= 4.34)
    norm_output: str = "weight"  # RMSNorm result dtype: "weight" (4.28) or "input" (4.34)

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, ...]], heads: int, rms_eps: float = 1e-6) -> LlamaConfig:
        """Width, depth, MLP width and vocabulary from a LlamaModel's tensor shapes (keys without ``model.``);
        the head count cannot be read from shapes and comes from the caller."""
        vocab, hidden = shapes["embed_tokens.weight"]
        layers = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("layers."))
        intermediate = shapes["layers.0.mlp.gate_proj.weight"][0]
        return cls(hidden, layers, heads, intermediate, vocab, rms_eps)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, output: str = "weight") -> None:
        super().__init__()
        if output not in ("weight", "input"):
            raise ValueError(f"RMSNorm output must be 'weight' (transformers 4.28) or 'input' (4.34), not {output!r}")
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.device)  # a no-op unless partial loading left this small weight offloaded
        if self.output == "input":
            # transformers 4.34 LlamaRMSNorm: normalise in fp32, cast back to the input dtype, then scale
            x32 = x.to(torch.float32)
            x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
            return weight * x32.to(x.dtype)
        # transformers 4.28 LlamaRMSNorm: variance in fp32, then back to the weight's half dtype
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.eps)
        if weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(weight.dtype)
        return weight * x


def rope_inv_freq(head_dim: int, theta: float = ROPE_THETA) -> torch.Tensor:
    """[head_dim / 2] inverse frequencies, as 4.28/4.34 LlamaRotaryEmbedding (4.28 stores them in the LLM file)."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class KVCache:
    """Preallocated keys/values for every layer: [layers, B, heads, capacity, head_dim]; grows by doubling."""

    def __init__(self, config: LlamaConfig, batch: int, capacity: int, dtype: torch.dtype, device: torch.device):
        shape = (config.layers, batch, config.heads, capacity, config.head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, heads, T, head_dim] after the current length; return all keys/values of `layer`."""
        end = self.length + k.shape[2]
        if end > self.k.shape[3]:
            grow = max(end, 2 * self.k.shape[3]) - self.k.shape[3]
            pad = list(self.k.shape)
            pad[3] = grow
            self.k = torch.cat([self.k, self.k.new_empty(pad)], dim=3)
            self.v = torch.cat([self.v, self.v.new_empty(pad)], dim=3)
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class LlamaAttention(nn.Module):
    def __init__(self, config: LlamaConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        d = config.hidden
        self.heads, self.head_dim = config.heads, config.head_dim
        self.q_proj = operations.Linear(d, d, bias=False)
        self.k_proj = operations.Linear(d, d, bias=False)
        self.v_proj = operations.Linear(d, d, bias=False)
        self.o_proj = operations.Linear(d, d, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None, layer: int
    ) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.append(layer, k, v)
        if t == 1:
            out = F.scaled_dot_product_attention(q, k, v)
        elif past == 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            allowed = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(diagonal=past)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class LlamaMLP(nn.Module):
    def __init__(self, config: LlamaConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.gate_proj = operations.Linear(config.hidden, config.intermediate, bias=False)
        self.up_proj = operations.Linear(config.hidden, config.intermediate, bias=False)
        self.down_proj = operations.Linear(config.intermediate, config.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaLayer(nn.Module):
    def __init__(self, config: LlamaConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config, operations=operations)
        self.mlp = LlamaMLP(config, operations=operations)
        self.input_layernorm = RMSNorm(config.hidden, config.rms_eps, config.norm_output)
        self.post_attention_layernorm = RMSNorm(config.hidden, config.rms_eps, config.norm_output)

    def forward(self, x, cos, sin, cache, layer):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaLM(nn.Module):
    """LlamaModel (embed_tokens, layers, norm) plus SmartEdit's untied `lm_head`.

    State-dict keys: `embed_tokens.weight`, `layers.{i}.…`, `norm.weight`, `lm_head.weight`,
    buffer `inv_freq` [head_dim/2].
    """

    def __init__(self, config: LlamaConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = operations.Embedding(config.vocab, config.hidden)
        self.layers = nn.ModuleList(LlamaLayer(config, operations=operations) for _ in range(config.layers))
        self.norm = RMSNorm(config.hidden, config.rms_eps, config.norm_output)
        self.lm_head = operations.Linear(config.hidden, config.vocab, bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(config.head_dim, config.rope_theta), persistent=True)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The activations' dtype: the norms' (weights of Linear/Embedding layers may be stored narrower, e.g. fp8,
        and cast per layer by the layer classes; loaders/storage.py)."""
        return self.norm.weight.dtype

    def new_cache(self, batch: int, capacity: int, device: torch.device | None = None) -> KVCache:
        """device: where the decode runs (default: the embedding's; under partial loading pass the inputs')."""
        return KVCache(self.config, batch, capacity, self.compute_dtype, device or self.embed_tokens.weight.device)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings [.., D] in the compute dtype, on the ids' device."""
        stored = self.embed_tokens.weight.dtype
        if stored != self.compute_dtype and input_ids.device.type != "cpu" and hasattr(self.embed_tokens, "comfy_cast_weights"):
            # ComfyUI's Embedding: the table cast to the compute dtype, then looked up (no fp8 lookup needed on a GPU);
            # on a CPU the rows are looked up in the stored dtype and cast, not the whole table
            return self.embed_tokens(input_ids, out_dtype=self.compute_dtype)
        return self.embed_tokens(input_ids).to(self.compute_dtype)

    def _rope(self, start: int, length: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # 4.28: t = arange(positions) in fp32, freqs = t ⊗ inv_freq, emb = cat(freqs, freqs), cos/sin cast to dtype
        positions = torch.arange(start, start + length, device=device, dtype=torch.float32)
        freqs = torch.outer(positions, self.inv_freq.to(device).float())
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype)[None, None], emb.sin().to(dtype)[None, None]

    def forward(self, inputs_embeds: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """inputs_embeds [B, T, D] -> last hidden state after the final norm [B, T, D].

        Positions continue from `cache.length` (0 without a cache), as the reference's all-ones mask implies.
        """
        start = cache.length if cache is not None else 0
        x = inputs_embeds
        cos, sin = self._rope(start, x.shape[1], x.dtype, x.device)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache, i)
        if cache is not None:
            cache.length += inputs_embeds.shape[1]
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)
