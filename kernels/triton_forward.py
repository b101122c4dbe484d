"""Triton backend: fused forward of multi-branch decoupled cross-attention.

One program per (query block, batch * head). It loads its Q tile once, runs one online softmax per
branch over that branch's K/V (FlashAttention-2 recurrence as in the Triton tutorial
python/tutorials/06-fused-attention.py), folds ``coef * acc / l`` of each finished branch into one
fp32 output tile, and writes the output once, straight into ComfyUI's ``[B, Lq, H*D]`` layout.
Branches are sequential with Q resident, so only two ``[BLOCK_M, DP]`` fp32 tiles are live whatever
the branch count (docs/kernels.md, Decoupled cross-attention).

This module imports triton; the registry imports it only when the triton backend runs. Under
``TRITON_INTERPRET=1`` (read by ``triton.jit`` when this module is imported) the kernel runs on the
CPU through numpy; the interpreter stores bf16 as uint16 and its bf16 ``tl.dot`` is wrong, so bf16
operands are upcast to fp32 before every dot there (docs/kernels.md, Triton kernel notes).
"""

from __future__ import annotations

import contextlib
import math

import torch
import triton
import triton.language as tl
from triton.errors import TritonError

from .launch_checks import check_launch

# Compile, resource and launch failures; CUDA errors surface as RuntimeError.
KERNEL_ERRORS = (TritonError, RuntimeError)

# Branch slots compiled into the kernel (text + 3 adapters). This file is loaded standalone by the interpreter
# tests, so the value is repeated in kernels/backends.py (TRITON_MAX_BRANCHES); test_registry.py checks they agree.
MAX_BRANCHES = 4
LOG2_E = 1.4426950408889634  # exp(x) = exp2(x * log2(e)), as the Triton tutorial folds it into the scale
INTERPRETING = bool(triton.knobs.runtime.interpret)  # the same knob triton.jit reads at decoration time


@triton.jit
def _branch_attention(q, k_base, v_base, stride_kn, stride_vn, kv_len, offs_d, d_valid, qk_scale_log2,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DP: tl.constexpr, UPCAST: tl.constexpr):
    """Normalised ``softmax(q k^T * scale) v`` of one branch for one Q tile: ``[BLOCK_M, DP]`` fp32."""
    offs_n = tl.arange(0, BLOCK_N)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, DP], tl.float32)
    for start_n in range(0, kv_len, BLOCK_N):
        cols = start_n + offs_n
        n_valid = cols < kv_len
        # K^T tile [DP, BLOCK_N] and V tile [BLOCK_N, DP]; padded keys and padded head dims read 0.
        k_t = tl.load(k_base + cols[None, :] * stride_kn + offs_d[:, None],
                      mask=d_valid[:, None] & n_valid[None, :], other=0.0)
        v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :],
                    mask=n_valid[:, None] & d_valid[None, :], other=0.0)
        if UPCAST:
            scores = tl.dot(q, k_t.to(tl.float32), input_precision="ieee")
        else:
            scores = tl.dot(q, k_t)
        # Every tile holds at least one real key (start_n < kv_len), so m_new is finite: no NaN rows.
        scores = tl.where(n_valid[None, :], scores * qk_scale_log2, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, 1))
        p = tl.math.exp2(scores - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        if UPCAST:
            pv = tl.dot(p, v.to(tl.float32), input_precision="ieee")
        else:
            pv = tl.dot(p.to(v.dtype), v)  # P rounded to the V dtype, as the tutorial does
        acc = acc * alpha[:, None] + pv
        m_i = m_new
    return acc / l_i[:, None]


@triton.jit
def _fold_branch(out, q, b, h, offs_m, m_valid, offs_d, d_valid, qk_scale_log2,
                 K, V, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn, kv_len,
                 scale, S, stride_s, M, stride_mb, stride_mq,
                 HAS_SCALE_TENSOR: tl.constexpr, HAS_MASK: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DP: tl.constexpr, UPCAST: tl.constexpr):
    """``out + coef[:, None] * branch`` with ``coef = scale * S[b] * M[b, rows]`` (fp32)."""
    coef = tl.full([BLOCK_M], 1.0, tl.float32) * scale
    if HAS_SCALE_TENSOR:
        coef = coef * tl.load(S + b * stride_s).to(tl.float32)
    if HAS_MASK:
        coef = coef * tl.load(M + b * stride_mb + offs_m * stride_mq, mask=m_valid, other=0.0).to(tl.float32)
    # lambda = 0 or a mask that is 0 over the whole tile: skip the branch, as the references skip
    # lambda = 0, decided on the device so the host never synchronises.
    if tl.max(tl.abs(coef), 0) != 0.0:
        branch = _branch_attention(q, K + b * stride_kb + h * stride_kh, V + b * stride_vb + h * stride_vh,
                                   stride_kn, stride_vn, kv_len, offs_d, d_valid, qk_scale_log2,
                                   BLOCK_M, BLOCK_N, DP, UPCAST)
        out = out + coef[:, None] * branch
    return out


@triton.jit
def _multi_branch_forward(
    Q, Out, stride_qb, stride_qh, stride_qm, stride_ob, stride_om, q_len, heads, qk_scale_log2,
    K0, V0, skb0, skh0, skn0, svb0, svh0, svn0, len0, scale0, S0, ss0, M0, smb0, smq0,
    K1, V1, skb1, skh1, skn1, svb1, svh1, svn1, len1, scale1, S1, ss1, M1, smb1, smq1,
    K2, V2, skb2, skh2, skn2, svb2, svh2, svn2, len2, scale2, S2, ss2, M2, smb2, smq2,
    K3, V3, skb3, skh3, skn3, svb3, svh3, svn3, len3, scale3, S3, ss3, M3, smb3, smq3,
    HEAD_DIM: tl.constexpr, DP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    N_BRANCHES: tl.constexpr, UPCAST: tl.constexpr,
    HAS_S0: tl.constexpr, HAS_M0: tl.constexpr, HAS_S1: tl.constexpr, HAS_M1: tl.constexpr,
    HAS_S2: tl.constexpr, HAS_M2: tl.constexpr, HAS_S3: tl.constexpr, HAS_M3: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // heads).to(tl.int64)
    h = (pid_bh % heads).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_valid = offs_m < q_len
    offs_d = tl.arange(0, DP)  # D padded to a power of two; columns >= HEAD_DIM read 0, never stored
    d_valid = offs_d < HEAD_DIM
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :],
                mask=m_valid[:, None] & d_valid[None, :], other=0.0)  # read once for every branch
    if UPCAST:
        q = q.to(tl.float32)
    out = tl.zeros([BLOCK_M, DP], tl.float32)
    out = _fold_branch(out, q, b, h, offs_m, m_valid, offs_d, d_valid, qk_scale_log2,
                       K0, V0, skb0, skh0, skn0, svb0, svh0, svn0, len0, scale0, S0, ss0, M0, smb0, smq0,
                       HAS_S0, HAS_M0, BLOCK_M, BLOCK_N, DP, UPCAST)
    if N_BRANCHES > 1:
        out = _fold_branch(out, q, b, h, offs_m, m_valid, offs_d, d_valid, qk_scale_log2,
                           K1, V1, skb1, skh1, skn1, svb1, svh1, svn1, len1, scale1, S1, ss1, M1, smb1, smq1,
                           HAS_S1, HAS_M1, BLOCK_M, BLOCK_N, DP, UPCAST)
    if N_BRANCHES > 2:
        out = _fold_branch(out, q, b, h, offs_m, m_valid, offs_d, d_valid, qk_scale_log2,
                           K2, V2, skb2, skh2, skn2, svb2, svh2, svn2, len2, scale2, S2, ss2, M2, smb2, smq2,
                           HAS_S2, HAS_M2, BLOCK_M, BLOCK_N, DP, UPCAST)
    if N_BRANCHES > 3:
        out = _fold_branch(out, q, b, h, offs_m, m_valid, offs_d, d_valid, qk_scale_log2,
                           K3, V3, skb3, skh3, skn3, svb3, svh3, svn3, len3, scale3, S3, ss3, M3, smb3, smq3,
                           HAS_S3, HAS_M3, BLOCK_M, BLOCK_N, DP, UPCAST)
    # Output [B, Lq, H*D]: head h owns columns h*HEAD_DIM .. h*HEAD_DIM + HEAD_DIM - 1 of each row.
    o_ptrs = Out + b * stride_ob + offs_m[:, None] * stride_om + h * HEAD_DIM + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=m_valid[:, None] & d_valid[None, :])


def launch_config(q_len: int, head_dim: int, kv_lengths: list[int], programs_per_block: int,
                  multiprocessors: int | None) -> dict[str, int]:
    """Block sizes and warps for one call (fixed heuristics; autotuning needs a GPU at import).

    ``programs_per_block`` is B*H (programs per query block); ``multiprocessors`` the SM count, None
    when interpreting. tl.dot needs every dimension >= 16 for 16-bit operands on NVIDIA (triton's
    ``min_dot_size``), hence DP >= 16 and BLOCK_N >= 16.
    """
    padded = max(16, triton.next_power_of_2(head_dim))
    block_n = 16 if max(kv_lengths) <= 16 else 32
    block_m = 64 if padded <= 128 else 32  # two live [BLOCK_M, DP] fp32 tiles must fit in registers
    if multiprocessors is not None:
        # Small grids (SD 1.5 middle block: Lq 64, B*H 24) leave SMs idle: shrink the query block.
        while block_m > 16 and triton.cdiv(q_len, block_m) * programs_per_block < 2 * multiprocessors:
            block_m //= 2
    return {"DP": padded, "BLOCK_M": block_m, "BLOCK_N": block_n, "num_warps": 8 if padded >= 128 else 4}


def _branch_arguments(q: torch.Tensor, key: torch.Tensor | None, value: torch.Tensor | None, scale: float,
                      scale_tensor: torch.Tensor | None, mask: torch.Tensor | None) -> list:
    """The 15 per-branch kernel arguments; an unused slot gets q as a never-read placeholder."""
    if key is None:
        return [q, q, 0, 0, 0, 0, 0, 0, 1, 0.0, q, 0, q, 0, 0]
    scale_ptr, scale_stride = (q, 0) if scale_tensor is None else (scale_tensor, scale_tensor.stride(0))
    mask_ptr, mask_strides = (q, (0, 0)) if mask is None else (mask, mask.stride())
    return [key, value, *key.stride()[:3], *value.stride()[:3], key.shape[2], float(scale),
            scale_ptr, scale_stride, mask_ptr, *mask_strides]


def multi_branch_cross_attention(
    q: torch.Tensor,
    keys: list[torch.Tensor],
    values: list[torch.Tensor],
    scales: list[float],
    scale_tensors: list[torch.Tensor | None],
    masks: list[torch.Tensor | None],
    out: torch.Tensor | None = None,
    config: dict[str, int] | None = None,
) -> torch.Tensor:
    """Same contract as the eager backend: q ``[B, H, Lq, D]`` -> ``[B, Lq, H*D]`` in q's dtype.

    Inputs may be strided views (ComfyUI's ``[B, L, H*D]`` projections seen as ``[B, H, L, D]``, an
    expanded batch of 1) as long as D is contiguous; ``out``, when given, must be contiguous.
    ``config`` overrides ``launch_config`` (tests use it to reach the small-grid block sizes).
    """
    check_launch(q, keys, values, scales, scale_tensors, masks, MAX_BRANCHES, INTERPRETING)
    batch, heads, q_len, head_dim = q.shape
    count = len(keys)
    if out is None:
        out = torch.empty(batch, q_len, heads * head_dim, device=q.device, dtype=q.dtype)
    elif out.shape != (batch, q_len, heads * head_dim) or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous [{batch}, {q_len}, {heads * head_dim}] tensor")
    if config is None:
        multiprocessors = None if INTERPRETING else torch.cuda.get_device_properties(q.device).multi_processor_count
        config = launch_config(q_len, head_dim, [k.shape[2] for k in keys], batch * heads, multiprocessors)
    arguments = [q, out, *q.stride()[:3], out.stride(0), out.stride(1), q_len, heads,
                 LOG2_E / math.sqrt(head_dim)]
    flags = {}
    for slot in range(MAX_BRANCHES):
        used = slot < count
        arguments += _branch_arguments(
            q, keys[slot] if used else None, values[slot] if used else None, scales[slot] if used else 0.0,
            scale_tensors[slot] if used else None, masks[slot] if used else None,
        )
        flags[f"HAS_S{slot}"] = used and scale_tensors[slot] is not None
        flags[f"HAS_M{slot}"] = used and masks[slot] is not None
    # fp32 inputs take IEEE dots (no TF32 rounding); the interpreter's bf16 dot needs fp32 operands.
    upcast = q.dtype == torch.float32 or (INTERPRETING and q.dtype == torch.bfloat16)
    grid = (triton.cdiv(q_len, config["BLOCK_M"]), batch * heads)
    # Triton launches on torch's current device; follow q there (a no-op in the interpreter, on CPU).
    with torch.cuda.device(q.device) if q.device.type == "cuda" else contextlib.nullcontext():
        _multi_branch_forward[grid](
            *arguments, HEAD_DIM=head_dim, N_BRANCHES=count, UPCAST=upcast, **flags, **config
        )
    return out
