"""Shared pieces of the kernel tests: random attention inputs and the float64 reference.

Imported as ``unit.kernels.attention_cases`` (the root conftest puts ``tests/`` on sys.path).

The reference is the definition of decoupled cross-attention written out in float64 with an
explicit softmax (docs/kernels.md): every backend is compared against it, never against
another backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lmm_edit.kernels import AttentionBranch

# Largest accepted |found - reference|, as atol + rtol * |reference|. Unit roundoff: fp16 4.9e-4,
# bf16 3.9e-3 (docs/kernels.md, Numerics); the unfused eager path rounds each branch and each sum.
TOLERANCE = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (3e-3, 3e-3),
    torch.bfloat16: (2.5e-2, 2.5e-2),
}


@dataclass(frozen=True)
class AttentionCase:
    """One random decoupled cross-attention call, described for test ids."""

    batch: int
    heads: int
    q_len: int
    head_dim: int
    kv_lengths: tuple[int, ...]
    dtype: torch.dtype
    masked: tuple[bool, ...] = ()  # per branch; default: image branches masked
    tensor_scale: tuple[bool, ...] = ()  # per branch; default: image branches per-batch
    comfy_layout: bool = False  # q/k/v as [B, L, H, D].transpose(1, 2) views of [B, L, H*D]
    seed: int = 0

    def __str__(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        return f"B{self.batch}H{self.heads}Lq{self.q_len}D{self.head_dim}kv{'+'.join(map(str, self.kv_lengths))}-{dtype}"


def build_inputs(case: AttentionCase) -> tuple[torch.Tensor, list[AttentionBranch]]:
    """q ``[B, H, Lq, D]`` and branches; branch 0 is text (scale 1, no mask), the others images."""
    generator = torch.Generator().manual_seed(case.seed)
    batch, heads, head_dim = case.batch, case.heads, case.head_dim

    def tokens(length: int) -> torch.Tensor:
        if case.comfy_layout:
            flat = torch.randn(batch, length, heads * head_dim, generator=generator)
            return flat.to(case.dtype).view(batch, length, heads, head_dim).transpose(1, 2)
        return torch.randn(batch, heads, length, head_dim, generator=generator).to(case.dtype)

    q = tokens(case.q_len)
    branches = []
    for index, length in enumerate(case.kv_lengths):
        masked = case.masked[index] if case.masked else index > 0
        per_batch = case.tensor_scale[index] if case.tensor_scale else index > 0
        scale: float | torch.Tensor = 1.0 if index == 0 else 0.5 + index * 0.25
        if per_batch:
            scale = torch.rand(batch, generator=generator) * 1.5
        mask = torch.rand(batch, case.q_len, 1, generator=generator) if masked else None
        branches.append(AttentionBranch(tokens(length), tokens(length), scale, mask))
    return q, branches


def reference_output(q: torch.Tensor, branches: list[AttentionBranch]) -> torch.Tensor:
    """float64 ``sum_i scale_i * mask_i * softmax(q k_i^T / sqrt(D)) v_i`` as ``[B, Lq, H*D]``."""
    batch, heads, q_len, head_dim = q.shape
    q64 = q.double()
    total = torch.zeros(batch, heads, q_len, head_dim, dtype=torch.float64, device=q.device)
    for branch in branches:
        scores = q64 @ branch.k.double().transpose(-1, -2) / math.sqrt(head_dim)
        weights = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
        weights = weights / weights.sum(dim=-1, keepdim=True)
        coef = torch.as_tensor(branch.scale, dtype=torch.float64, device=q.device).reshape(-1, 1, 1, 1)
        if branch.mask is not None:
            coef = coef * branch.mask.double().reshape(-1, 1, q_len, 1)
        total = total + coef * (weights @ branch.v.double())
    return total.transpose(1, 2).reshape(batch, q_len, heads * head_dim)


def assert_close_to_reference(found: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    atol, rtol = TOLERANCE[dtype]
    assert found.shape == expected.shape
    assert torch.isfinite(found).all(), "output has NaN/inf (a row or column was never written?)"
    error = (found.double() - expected).abs()
    allowed = atol + rtol * expected.abs()
    worst = (error - allowed).argmax()
    assert (error <= allowed).all(), (
        f"max error {error.max().item():.3g}; worst element {error.flatten()[worst].item():.3g} "
        f"> allowed {allowed.flatten()[worst].item():.3g} ({dtype})"
    )
