"""The backends this pack ships and what each accepts.

Priority follows comfy-kitchen (``cuda`` > ``triton`` > ``eager``); a ``cuda`` backend would be one
more ``Backend`` entry here. Triton is optional: its presence is checked once, without importing it,
and the backend says what to install when it is absent.
"""

from __future__ import annotations

import importlib.util

import torch

from .constraints import OpConstraints
from .registry import Backend, BackendRegistry

MULTI_BRANCH_CROSS_ATTENTION = "multi_branch_cross_attention"
ATTENTION = "attention"

_FLOAT_DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32})

# Head dims the Triton kernel is tested at: SD 1.5 uses 40/80/160, SDXL 64 (docs/kernels.md, Shapes),
# 128 is the common LLM/DiT size. The kernel pads D to a power of two (<= 256), so other sizes would
# work by construction; add one here together with a test.
TRITON_HEAD_DIMS = frozenset({40, 64, 80, 128, 160})
# Branch slots compiled into the Triton kernel: text + up to three adapters (design range 1-4 branches,
# docs/kernels.md, Shapes).
TRITON_MAX_BRANCHES = 4
# Adapter branches have 1..~600 tokens (research §3.2); text has 77*k for k prompt chunks. The kernel
# loops over K/V tiles, so the upper bound marks the tested regime, not a correctness limit.
TRITON_KV_LENGTHS = (1, 2048)
# bf16 tl.dot needs Ampere; the same floor comfy-kitchen declares for its Triton attention (na3d).
TRITON_MIN_CUDA_CAPABILITY = (8, 0)

_EAGER = Backend(
    name="eager",
    module="eager",
    ops={
        # SDPA takes any device and head dim; Lkv = 0 would give NaN rows, hence the lower bound.
        MULTI_BRANCH_CROSS_ATTENTION: OpConstraints(
            dtypes=_FLOAT_DTYPES | {torch.float64}, kv_length_range=(1, None)
        ),
        ATTENTION: OpConstraints(dtypes=_FLOAT_DTYPES | {torch.float64}, kv_length_range=(1, None)),
    },
)


def _triton_unavailable_reason() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton, Linux with an NVIDIA GPU; or pip install lmm-edit[triton])"
    return None


def _triton_backend() -> Backend:
    return Backend(
        name="triton",
        module="triton_forward",
        unavailable_reason=_triton_unavailable_reason(),
        ops={
            MULTI_BRANCH_CROSS_ATTENTION: OpConstraints(
                device_types=frozenset({"cuda"}),
                dtypes=_FLOAT_DTYPES,
                head_dims=TRITON_HEAD_DIMS,
                max_branches=TRITON_MAX_BRANCHES,
                kv_length_range=TRITON_KV_LENGTHS,
                needs_innermost_contiguous=True,
                min_cuda_capability=TRITON_MIN_CUDA_CAPABILITY,
            ),
        },
    )


def build_registry() -> BackendRegistry:
    return BackendRegistry([_triton_backend(), _EAGER], priority=["triton", "eager"])


REGISTRY = build_registry()
