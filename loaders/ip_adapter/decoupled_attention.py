"""Decoupled cross-attention (IP-Adapter, arXiv 2308.06721; InsightEdit's image stream).

    out = softmax(Q K_txt^T / sqrt(D)) V_txt + sum_i lambda_i * m_i * softmax(Q K_img_i^T / sqrt(D)) V_img_i

with ``K_img_i = tokens_i @ to_k_ip^T`` and ``V_img_i = tokens_i @ to_v_ip^T``. Each branch keeps its
own softmax (docs/kernels.md). ``decoupled_attention`` is what an ``attn2`` replace patch
calls with ComfyUI's projected ``q, k, v`` (``[B, L, H*D]``, ``comfy/ldm/modules/attention.py``);
its result goes to ``attn2.to_out`` as the text-only attention would. The attention itself runs in
``kernels.multi_branch_cross_attention`` (eager reference on CPU, fused backends where they apply).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as functional

from ...kernels import AttentionBranch, multi_branch_cross_attention


@dataclass(frozen=True)
class ImageBranch:
    """One image branch of one attn2 layer.

    tokens: ``[B or 1, N_img, D_ctx]`` image tokens (IP-Adapter projection or IAA output), per batch row.
    to_k_ip, to_v_ip: ``[H*D, D_ctx]`` the layer's image K/V projection weights (bias-free Linear).
    weight: lambda, a float or a per-batch-row tensor ``[B]`` (or one element).
    mask: optional per-query-row weight ``[B or 1, Lq]`` (see ``query_mask.py``), 1 = full effect.
    """

    tokens: torch.Tensor
    to_k_ip: torch.Tensor
    to_v_ip: torch.Tensor
    weight: float | torch.Tensor = 1.0
    mask: torch.Tensor | None = None


def _is_off(weight: float | torch.Tensor) -> bool:
    # A lambda of exactly 0 leaves the text-only result; diffusers and IPAdapter_plus skip it too.
    if isinstance(weight, torch.Tensor):
        return bool((weight == 0).all())
    return weight == 0


def _heads(x: torch.Tensor, heads: int, batch: int) -> torch.Tensor:
    """``[b, L, H*D] -> [batch, H, L, D]`` (a view; a batch of 1 is expanded, not copied)."""
    return x.unflatten(-1, (heads, x.shape[-1] // heads)).transpose(1, 2).expand(batch, -1, -1, -1)


def _image_kv(branch: ImageBranch, index: int, q: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch, _, width = q.shape
    tokens = branch.tokens
    if tokens.dim() != 3 or tokens.shape[0] not in (1, batch):
        raise ValueError(
            f"image branch {index}: tokens must be [B={batch} or 1, N_img, D_ctx], found {tuple(tokens.shape)}. "
            "Fix: give one row of image tokens per batch row (unconditional rows their own, e.g. zeros)."
        )
    for name, w in (("to_k_ip", branch.to_k_ip), ("to_v_ip", branch.to_v_ip)):
        if w.dim() != 2 or w.shape[0] != width or w.shape[1] != tokens.shape[-1]:
            raise ValueError(
                f"image branch {index}: {name} must be [H*D={width}, D_ctx={tokens.shape[-1]}], found "
                f"{tuple(w.shape)}. Fix: use the adapter's weights for this layer (adapter and UNet must match)."
            )
    tokens = tokens.to(device=q.device, dtype=q.dtype)
    k = functional.linear(tokens, branch.to_k_ip.to(device=q.device, dtype=q.dtype))  # [b, N_img, H*D]
    v = functional.linear(tokens, branch.to_v_ip.to(device=q.device, dtype=q.dtype))
    return _heads(k, heads, batch), _heads(v, heads, batch)


def decoupled_attention(
    q: torch.Tensor,
    k_txt: torch.Tensor,
    v_txt: torch.Tensor,
    heads: int,
    image_branches: Sequence[ImageBranch] = (),
) -> torch.Tensor:
    """Text attention plus lambda-weighted image attentions, one softmax each.

    q ``[B, Lq, H*D]``; k_txt, v_txt ``[B, Lt, H*D]`` (attn2's ``to_q/to_k/to_v`` outputs); heads H.
    Returns ``[B, Lq, H*D]`` in q's dtype. Branches whose lambda is 0 everywhere are skipped.
    """
    if q.dim() != 3 or q.shape[-1] % heads:
        raise ValueError(f"q must be [B, Lq, H*D] with H*D divisible by heads={heads}, found {tuple(q.shape)}")
    batch = q.shape[0]
    branches = [AttentionBranch(_heads(k_txt, heads, batch), _heads(v_txt, heads, batch))]
    for index, branch in enumerate(image_branches):
        if _is_off(branch.weight):
            continue
        k_img, v_img = _image_kv(branch, index, q, heads)
        weight = branch.weight
        if isinstance(weight, torch.Tensor):
            weight = weight.to(device=q.device, dtype=torch.float32)
        mask = None if branch.mask is None else branch.mask.to(device=q.device, dtype=q.dtype)
        branches.append(AttentionBranch(k_img, v_img, weight, mask))
    return multi_branch_cross_attention(_heads(q, heads, batch), branches)
