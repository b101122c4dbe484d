"""Eager backend: the reference every other backend is tested against.

Decoupled cross-attention as IP-Adapter computes it (tencent-ailab/IP-Adapter
``ip_adapter/attention_processor.py``, ``IPAttnProcessor2_0``; ComfyUI_IPAdapter_plus
``CrossAttentionPatch.py``): one SDPA per branch, each output times its scale and mask, then added.
Each branch keeps its own softmax; one softmax over concatenated K/V is a different function
(docs/kernels.md: concatenating K/V is not the same).
"""

from __future__ import annotations

import torch
import torch.nn.functional as functional

# Exceptions a failing SDPA call raises (shape/device/dtype problems surface as RuntimeError).
KERNEL_ERRORS = (RuntimeError,)


def multi_branch_cross_attention(
    q: torch.Tensor,
    keys: list[torch.Tensor],
    values: list[torch.Tensor],
    scales: list[float],
    scale_tensors: list[torch.Tensor | None],
    masks: list[torch.Tensor | None],
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``sum_i scales[i] * scale_tensors[i][b] * masks[i][b, l] * softmax(q k_i^T / sqrt(D)) v_i``.

    q ``[B, H, Lq, D]``; keys/values ``[B, H, Lkv_i, D]``; scale_tensors ``[B]`` or None; masks
    ``[B, Lq]`` or None. Returns ``[B, Lq, H*D]`` in q's dtype (written into ``out`` when given).
    Branches with a Python scale of 0 are skipped, as diffusers and IPAdapter_plus skip them.
    """
    batch, heads, q_len, head_dim = q.shape
    total: torch.Tensor | None = None
    for key, value, scale, scale_tensor, mask in zip(keys, values, scales, scale_tensors, masks):
        if scale == 0.0:
            continue
        branch = functional.scaled_dot_product_attention(q, key, value)  # [B, H, Lq, D]
        if scale != 1.0:
            branch = branch * scale
        if scale_tensor is not None:
            branch = branch * scale_tensor.to(branch.dtype).view(batch, 1, 1, 1)
        if mask is not None:
            branch = branch * mask.to(branch.dtype).view(batch, 1, q_len, 1)
        total = branch if total is None else total + branch
    if total is None:
        total = q.new_zeros(batch, heads, q_len, head_dim)
    result = total.transpose(1, 2).reshape(batch, q_len, heads * head_dim)
    if out is None:
        return result
    return out.copy_(result)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain SDPA: q ``[B, H, Lq, D]``, k/v ``[B, H, Lkv, D]`` -> ``[B, H, Lq, D]``."""
    return functional.scaled_dot_product_attention(q, k, v)
