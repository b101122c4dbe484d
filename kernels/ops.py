"""Public attention ops, each dispatched through the registry.

``multi_branch_cross_attention`` is one ``torch.library.custom_op`` with a fake implementation, so
``torch.compile`` sees a single node (precedents: ComfyUI's ``comfy::flash_attn``, comfy-kitchen's
``comfy_kitchen::na3d``). The backend is chosen from declared constraints by the caller and handed
to the op by name: the op is registered once per process, and a second copy of the pack in the same
process (the tests import it as ``lmm_edit`` and ComfyUI under its own name) reuses that registration
while its own ``use_backend`` override still decides.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .backends import ATTENTION, MULTI_BRANCH_CROSS_ATTENTION, REGISTRY
from .branches import AttentionBranch, check_keys_values, check_query, op_arguments
from .constraints import describe_call


def select_backend(op_name: str, *tensors: torch.Tensor, **params: object) -> str:
    """Name of the backend that will run ``op_name`` for these tensors (q, then k, v per branch).

    ``params`` may give ``kv_lengths`` (one per branch) instead of deriving them from the tensors.
    Raises ``NoCapableBackendError`` listing every backend's reasons when none accepts the call.
    """
    kv_lengths = params.pop("kv_lengths", None)
    if params:
        raise TypeError(f"select_backend got unknown parameters {sorted(params)}")
    return REGISTRY.select(op_name, describe_call(*tensors, kv_lengths=kv_lengths))


@contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force backend ``name`` in this thread (tests, or a user's explicit choice); strict, no fallback."""
    with REGISTRY.use_backend(name):
        yield


def list_backends() -> dict[str, dict[str, object]]:
    """Every backend in priority order with its availability, reason and ops."""
    return REGISTRY.list_backends()


OP_NAMESPACE, OP_NAME = "lmm_edit", "multi_branch_cross_attention"


def _multi_branch_op(
    q: torch.Tensor,
    keys: list[torch.Tensor],
    values: list[torch.Tensor],
    scales: list[float],
    scale_tensors: list[torch.Tensor | None],
    masks: list[torch.Tensor | None],
    backend: str,
) -> torch.Tensor:
    return REGISTRY.implementation(backend, MULTI_BRANCH_CROSS_ATTENTION)(q, keys, values, scales, scale_tensors, masks)


def _multi_branch_op_fake(q, keys, values, scales, scale_tensors, masks, backend):
    batch, heads, q_len, head_dim = q.shape
    return q.new_empty(batch, q_len, heads * head_dim)


if not hasattr(getattr(torch.ops, OP_NAMESPACE), OP_NAME):  # once per process (see the module docstring)
    torch.library.custom_op(f"{OP_NAMESPACE}::{OP_NAME}", _multi_branch_op, mutates_args=()).register_fake(
        _multi_branch_op_fake
    )


def multi_branch_cross_attention(q: torch.Tensor, branches: list[AttentionBranch]) -> torch.Tensor:
    """Decoupled cross-attention: ``sum_i scale_i * mask_i * softmax(q k_i^T / sqrt(D)) v_i``.

    q ``[B, H, Lq, D]`` (a ``[B, Lq, H, D]`` transpose view is fine); branch 0 is the text branch.
    Returns ``[B, Lq, H*D]`` in q's dtype, ready for ``to_out``.
    """
    args = op_arguments(q, branches)
    tensors = [q] + [t for pair in zip(args.keys, args.values) for t in pair]
    backend = select_backend(MULTI_BRANCH_CROSS_ATTENTION, *tensors)
    return torch.ops.lmm_edit.multi_branch_cross_attention(
        q, args.keys, args.values, args.scales, args.scale_tensors, args.masks, backend
    )


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Single-branch attention (SmartEdit BIM): q ``[B, H, Lq, D]``, k/v ``[B, H, Lkv, D]`` -> ``[B, H, Lq, D]``.

    Inputs are checked as ``multi_branch_cross_attention`` checks each branch (shapes, device, dtype,
    k and v token counts); SDPA alone would broadcast or truncate some mismatches silently.
    """
    check_query(q)
    check_keys_values("attention", q, k, v)
    backend = select_backend(ATTENTION, q, k, v)
    return REGISTRY.implementation(backend, ATTENTION)(q, k, v)
