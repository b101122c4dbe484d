"""What the Triton kernel can compute, checked on the host before every launch.

The registry declares these limits for selection (backends.py), but ``triton_forward`` can also be
called directly (probe, benchmarks, tests), and the kernel itself checks nothing: a head-dim stride
other than 1 reads the wrong elements, Lkv 0 divides 0 by 0, a short mask reads past its end. So the
launcher refuses such calls here, with the shape that was expected and the fix. No triton import:
these checks run (and are tested) where triton is absent.
"""

from __future__ import annotations

import torch

from .branches import check_keys_values, check_query

MAX_HEAD_DIM = 256  # D is padded to a power of two; two [BLOCK_M, DP] fp32 tiles must fit in registers
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _unit_stride(name: str, tensor: torch.Tensor) -> None:
    if tensor.shape[-1] > 1 and tensor.stride(-1) != 1:
        raise ValueError(
            f"triton attention: {name} has stride {tensor.stride(-1)} along the head dim, the kernel reads it "
            f"with stride 1 (shape {tuple(tensor.shape)}, strides {tuple(tensor.stride())}). Fix: pass a view whose "
            f"last dim is contiguous (.contiguous()), or use the eager backend."
        )


def check_launch(q: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor], scales: list[float],
                 scale_tensors: list[torch.Tensor | None], masks: list[torch.Tensor | None], max_branches: int,
                 interpreting: bool) -> None:
    """Raise ``ValueError`` for any call the kernel would compute wrongly or not at all."""
    check_query(q)
    count = len(keys)
    if not 1 <= count <= max_branches:
        raise ValueError(f"triton attention: takes 1..{max_branches} branches, got {count}. Fix: use the eager "
                         f"backend for more branches.")
    if not len(values) == len(scales) == len(scale_tensors) == len(masks) == count:
        raise ValueError(f"triton attention: one value, scale, scale tensor and mask per key ({count} keys), got "
                         f"{len(values)}, {len(scales)}, {len(scale_tensors)}, {len(masks)}. Fix: build the lists "
                         f"with kernels.branches.op_arguments.")
    batch, _, q_len, head_dim = q.shape
    if q.dtype not in DTYPES:
        raise ValueError(f"triton attention: dtype {q.dtype} not in fp16/bf16/fp32. Fix: use the eager backend.")
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"triton attention: head dim {head_dim} outside 1..{MAX_HEAD_DIM}. Fix: use the eager "
                         f"backend.")
    _unit_stride("q", q)
    for index, (key, value) in enumerate(zip(keys, values)):
        check_keys_values(f"triton attention branch {index}", q, key, value)
        _unit_stride(f"branch {index} k", key)
        _unit_stride(f"branch {index} v", value)
    for index, (scale_tensor, mask) in enumerate(zip(scale_tensors, masks)):
        if scale_tensor is not None and (scale_tensor.shape != (batch,) or scale_tensor.device != q.device):
            raise ValueError(f"triton attention branch {index}: scale tensor must be [B={batch}] on {q.device}, "
                             f"found {tuple(scale_tensor.shape)} on {scale_tensor.device}. Fix: build it with "
                             f"kernels.branches.op_arguments.")
        if mask is not None and (mask.shape != (batch, q_len) or mask.device != q.device):
            raise ValueError(f"triton attention branch {index}: mask must be [B={batch}, Lq={q_len}] on {q.device}, "
                             f"found {tuple(mask.shape)} on {mask.device}. Fix: build it with "
                             f"kernels.branches.op_arguments.")
    if q.device.type != "cuda" and not interpreting:
        raise ValueError(f"triton attention: q is on {q.device}; the kernel runs on CUDA devices (or on the CPU "
                         f"under TRITON_INTERPRET=1). Fix: move the inputs to the GPU, or use the eager backend.")
