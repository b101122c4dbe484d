"""Declarative constraints a backend states for each op, checked before the call.

Shape of the idea follows comfy-kitchen (``comfy_kitchen/constraints.py``): a backend says which
devices, dtypes and shapes it accepts, and selection compares a description of the call against
that declaration. Nothing is tried and caught: a backend that cannot take a call is never called.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CallDescription:
    """What selection needs to know about one call of an attention op.

    ``q`` is ``[B, H, Lq, D]``; ``kv_lengths`` holds ``Lkv`` of each branch (one for plain attention).
    """

    device: torch.device
    dtype: torch.dtype
    head_dim: int
    kv_lengths: tuple[int, ...]
    innermost_contiguous: bool  # every tensor has stride 1 along D
    mixed_devices: tuple[str, ...] = ()  # device types that differ from q's
    mixed_dtypes: tuple[torch.dtype, ...] = ()  # dtypes that differ from q's

    @property
    def branch_count(self) -> int:
        return len(self.kv_lengths)


def describe_call(*tensors: torch.Tensor, kv_lengths: tuple[int, ...] | None = None) -> CallDescription:
    """Describe a call from its tensors: ``q`` first, then ``k, v`` of each branch in order."""
    if not tensors:
        raise ValueError("describe_call needs at least q")
    q = tensors[0]
    if kv_lengths is None:
        kv_lengths = tuple(int(k.shape[-2]) for k in tensors[1::2])
    return CallDescription(
        device=q.device,
        dtype=q.dtype,
        head_dim=int(q.shape[-1]),
        kv_lengths=tuple(int(n) for n in kv_lengths),
        innermost_contiguous=all(t.stride(-1) == 1 or t.shape[-1] == 1 for t in tensors),
        mixed_devices=tuple(sorted({t.device.type for t in tensors if t.device != q.device})),
        mixed_dtypes=tuple(t.dtype for t in tensors if t.dtype != q.dtype),
    )


@dataclass(frozen=True)
class OpConstraints:
    """What one backend accepts for one op. ``None`` means "no limit" for that field."""

    device_types: frozenset[str] | None = None
    dtypes: frozenset[torch.dtype] | None = None
    head_dims: frozenset[int] | None = None
    max_branches: int | None = None
    kv_length_range: tuple[int, int | None] = (1, None)
    needs_innermost_contiguous: bool = False
    min_cuda_capability: tuple[int, int] | None = None

    def reasons_to_refuse(self, call: CallDescription) -> list[str]:
        """Every reason this backend cannot take ``call``; empty when it can."""
        reasons: list[str] = []
        if call.mixed_devices:
            reasons.append(f"tensors on several devices ({call.device.type} and {', '.join(call.mixed_devices)})")
        if call.mixed_dtypes:
            found = ", ".join(str(d) for d in sorted(set(call.mixed_dtypes), key=str))
            reasons.append(f"tensors of several dtypes ({call.dtype} and {found})")
        if self.device_types is not None and call.device.type not in self.device_types:
            reasons.append(f"device {call.device.type} not in {sorted(self.device_types)}")
        if self.dtypes is not None and call.dtype not in self.dtypes:
            reasons.append(f"dtype {call.dtype} not in {sorted(str(d) for d in self.dtypes)}")
        if self.head_dims is not None and call.head_dim not in self.head_dims:
            reasons.append(f"head dim {call.head_dim} not in {sorted(self.head_dims)}")
        if call.branch_count < 1:
            reasons.append("no branch")
        if self.max_branches is not None and call.branch_count > self.max_branches:
            reasons.append(f"{call.branch_count} branches, at most {self.max_branches}")
        low, high = self.kv_length_range
        for index, length in enumerate(call.kv_lengths):
            if length < low or (high is not None and length > high):
                limit = f"{low}..{high}" if high is not None else f">= {low}"
                reasons.append(f"branch {index} has Lkv {length}, needs {limit}")
        if self.needs_innermost_contiguous and not call.innermost_contiguous:
            reasons.append("a tensor is not contiguous along the head dim (stride(-1) != 1)")
        if self.min_cuda_capability is not None and call.device.type == "cuda":
            found = torch.cuda.get_device_capability(call.device)
            if found < self.min_cuda_capability:
                wanted = ".".join(map(str, self.min_cuda_capability))
                reasons.append(f"CUDA compute capability {found[0]}.{found[1]} below {wanted}")
        return reasons
