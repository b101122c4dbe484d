"""One attention branch of decoupled cross-attention, and its normalisation for the op.

A branch is ``(k, v, scale, mask)``: branch 0 is usually the text branch (scale 1.0, no mask), the
others are image branches (IP-Adapter / IAA), each with its own softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AttentionBranch:
    """k, v ``[B, H, Lkv, D]``; scale a float or a per-batch tensor (``[B]``, ``[B, 1, 1]`` or one
    element); mask an optional per-query-row weight broadcastable to ``[B, Lq]`` (``[B, Lq]``,
    ``[B, Lq, 1]``, ``[1, Lq]``, ``[Lq]``)."""

    k: torch.Tensor
    v: torch.Tensor
    scale: float | torch.Tensor = 1.0
    mask: torch.Tensor | None = None


@dataclass(frozen=True)
class OpArguments:
    """The branches flattened into the custom op's argument lists."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    scales: list[float]
    scale_tensors: list[torch.Tensor | None]
    masks: list[torch.Tensor | None]  # each [B, Lq] (a broadcast view, no copy)


def _check_kv(where: str, name: str, tensor: torch.Tensor, q: torch.Tensor) -> None:
    batch, heads, _, head_dim = q.shape
    if tensor.dim() != 4 or tensor.shape[0] != batch or tensor.shape[1] != heads or tensor.shape[3] != head_dim:
        raise ValueError(
            f"{where}: {name} must be [B={batch}, H={heads}, Lkv, D={head_dim}] like q "
            f"{tuple(q.shape)}, found {tuple(tensor.shape)}. Fix: view [B, L, H*D] projections as "
            f"[B, L, H, D].transpose(1, 2) and expand a batch of 1 to B."
        )
    if tensor.device != q.device or tensor.dtype != q.dtype:
        raise ValueError(
            f"{where}: {name} is {tensor.dtype} on {tensor.device}, q is {q.dtype} on "
            f"{q.device}. Fix: cast and move the projections to q's dtype and device."
        )


def check_query(q: torch.Tensor) -> None:
    if q.dim() != 4:
        raise ValueError(f"q must be [B, H, Lq, D], found {tuple(q.shape)}. Fix: view [B, L, H*D] projections as "
                         f"[B, L, H, D].transpose(1, 2).")


def check_keys_values(where: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """k and v ``[B, H, Lkv, D]`` like q, on q's device and dtype, with the same token count."""
    _check_kv(where, "k", k, q)
    _check_kv(where, "v", v, q)
    if k.shape[2] != v.shape[2]:
        raise ValueError(f"{where}: k has {k.shape[2]} tokens, v {v.shape[2]}. Fix: project k and v from the same "
                         f"tokens (one context tensor for both).")
    if k.shape[2] == 0:
        raise ValueError(f"{where}: k and v hold no token (Lkv 0), and a softmax over no key is undefined. Fix: "
                         f"leave out a branch that has no tokens.")


def _scale_tensor(index: int, scale: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    batch = q.shape[0]
    flat = scale.reshape(-1)
    if flat.numel() not in (1, batch):
        raise ValueError(
            f"attention branch {index}: scale tensor must hold 1 or B={batch} values, found shape "
            f"{tuple(scale.shape)}. Fix: pass one weight per batch row."
        )
    if scale.device != q.device:
        raise ValueError(f"attention branch {index}: scale tensor is on {scale.device}, q on {q.device}.")
    return flat.expand(batch)


def _row_weights(index: int, mask: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    batch, _, q_len, _ = q.shape
    rows = mask[..., 0] if mask.dim() == 3 and mask.shape[-1] == 1 else mask
    if rows.dim() > 2 or rows.shape[-1] != q_len or (rows.dim() == 2 and rows.shape[0] not in (1, batch)):
        raise ValueError(
            f"attention branch {index}: mask must be a per-query-row weight broadcastable to [B={batch}, "
            f"Lq={q_len}] ([B, Lq] or [B, Lq, 1]), found {tuple(mask.shape)}. Fix: resize the mask to the "
            f"layer's latent size and flatten it to Lq rows."
        )
    if mask.device != q.device:
        raise ValueError(f"attention branch {index}: mask is on {mask.device}, q on {q.device}.")
    return rows.expand(batch, q_len)


def op_arguments(q: torch.Tensor, branches: list[AttentionBranch]) -> OpArguments:
    """Validate ``branches`` against ``q`` ``[B, H, Lq, D]`` and flatten them for the op."""
    check_query(q)
    if not branches:
        raise ValueError("multi_branch_cross_attention needs at least one branch (the text branch).")
    scales: list[float] = []
    scale_tensors: list[torch.Tensor | None] = []
    masks: list[torch.Tensor | None] = []
    for index, branch in enumerate(branches):
        check_keys_values(f"attention branch {index}", q, branch.k, branch.v)
        if isinstance(branch.scale, torch.Tensor):
            scales.append(1.0)
            scale_tensors.append(_scale_tensor(index, branch.scale, q))
        else:
            scales.append(float(branch.scale))
            scale_tensors.append(None)
        masks.append(None if branch.mask is None else _row_weights(index, branch.mask, q))
    return OpArguments(
        keys=[branch.k for branch in branches],
        values=[branch.v for branch in branches],
        scales=scales,
        scale_tensors=scale_tensors,
        masks=masks,
    )
