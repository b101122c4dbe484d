"""Run the backend an op would use once, on a tiny input, so a broken kernel fails at patch time.

The ComfyUI node calls ``probe`` when it installs the attention patch: a missing driver, a Triton
compile error or wrong numbers then surface in that node, not in the middle of sampling.
"""

from __future__ import annotations

import math

import torch

from .backends import ATTENTION, MULTI_BRANCH_CROSS_ATTENTION, REGISTRY
from .ops import select_backend

# Largest |backend - float64 reference| accepted on the probe input (values are O(1)). Unit roundoff:
# fp16 4.9e-4, bf16 3.9e-3 (docs/kernels.md, Numerics); a few roundings per output element.
PROBE_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}

_PROBE_BATCH, _PROBE_HEADS, _PROBE_Q_LEN = 2, 2, 24  # Lq 24: a ragged last query block
_PROBE_KV_LENGTHS = (77, 4)  # one text chunk, one IP-Adapter base image branch


class KernelProbeError(RuntimeError):
    """The selected backend failed on, or computed wrong values for, the probe input."""


def _reference(q: torch.Tensor, branches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """float64 ``sum coef * softmax(q k^T / sqrt(D)) v`` with coef ``[B, 1, Lq, 1]``; ``[B, H, Lq, D]``."""
    q64 = q.double()
    total = torch.zeros_like(q64)
    for key, value, coef in branches:
        weights = torch.softmax(q64 @ key.double().transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        total += coef.double() * (weights @ value.double())
    return total


def _probe_inputs(device: torch.device, dtype: torch.dtype, head_dim: int):
    generator = torch.Generator().manual_seed(0)
    shape = (_PROBE_BATCH, _PROBE_HEADS, head_dim)

    def projection(length: int) -> torch.Tensor:
        # ComfyUI hands attention [B, L, H*D] Linear outputs; the op sees the [B, H, L, D] view.
        flat = torch.randn(shape[0], length, shape[1] * shape[2], generator=generator)
        return flat.to(device, dtype).view(shape[0], length, shape[1], shape[2]).transpose(1, 2)

    q = projection(_PROBE_Q_LEN)
    kv = [(projection(n), projection(n)) for n in _PROBE_KV_LENGTHS]
    return q, kv


def probe(op_name: str, device: torch.device | str, dtype: torch.dtype, head_dim: int) -> str:
    """Select the backend for ``op_name`` at this device/dtype/head dim, run it once, check it.

    Returns the backend's name. Raises ``NoCapableBackendError`` when no backend accepts such a call,
    and ``KernelProbeError`` (naming backend, device, dtype, head dim and the fix) when it fails.
    """
    device = torch.device(device)
    q, kv = _probe_inputs(device, dtype, head_dim)
    if op_name == MULTI_BRANCH_CROSS_ATTENTION:
        tensors = [q] + [t for pair in kv for t in pair]
    elif op_name == ATTENTION:
        tensors = [q, *kv[0]]
    else:
        raise ValueError(f"unknown op {op_name!r}; known: {[MULTI_BRANCH_CROSS_ATTENTION, ATTENTION]}")
    backend = select_backend(op_name, *tensors)
    implementation = REGISTRY.implementation(backend, op_name)
    where = f"the {backend} backend of {op_name} on {device} ({dtype}, head dim {head_dim})"
    fix = "Fix: choose the eager backend, or update triton / the GPU driver and restart ComfyUI."
    batch, heads, q_len = _PROBE_BATCH, _PROBE_HEADS, _PROBE_Q_LEN
    try:
        if op_name == ATTENTION:
            found = implementation(*tensors)
            expected = _reference(q, [(kv[0][0], kv[0][1], torch.ones(()))])
        else:
            lam = torch.tensor([0.5, 1.25], device=device)  # per batch row
            mask = torch.linspace(0.0, 1.0, q_len, device=device).expand(batch, q_len)
            found = implementation(q, [k for k, _ in kv], [v for _, v in kv], [1.0, 1.0], [None, lam], [None, mask])
            found = found.view(batch, q_len, heads, head_dim).transpose(1, 2)
            image_coef = lam.view(batch, 1, 1, 1) * mask.reshape(batch, 1, q_len, 1)
            expected = _reference(q, [(*kv[0], torch.ones((), device=device)), (*kv[1], image_coef)])
    except REGISTRY.kernel_errors(backend) as err:
        raise KernelProbeError(f"{where} failed on a tiny probe input: {err}\n{fix}") from err
    error = (found.double() - expected).abs().max().item()
    if not error <= PROBE_TOLERANCE[dtype]:  # also catches NaN
        raise KernelProbeError(
            f"{where} computed wrong values on a tiny probe input: max error {error:.3g} against float64 "
            f"math, tolerance {PROBE_TOLERANCE[dtype]:.1g}.\n{fix}"
        )
    return backend
