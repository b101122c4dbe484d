"""Runs the Triton kernel in a child process started with TRITON_INTERPRET=1.

``triton.jit`` decides interpreted-or-compiled when a function is decorated, and triton's own
library functions (``tl.zeros``, ``tl.max``, ...) are decorated when triton is first imported. Once
any test in the session has imported triton (torch.compile does), only a fresh process can run the
interpreter. This module is imported by that child (a spawned process) and must not import triton
before ``load_kernel`` has set the variable; the parent's environment is never touched.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

import torch

_KERNEL: list[ModuleType] = []  # the one kernel module of this worker process


def load_kernel(kernel_file: str) -> None:
    """Process initializer: switch Triton to its interpreter, then import the kernel module."""
    if "triton" in sys.modules:
        raise RuntimeError("triton was imported before TRITON_INTERPRET was set in the interpreter worker")
    os.environ["TRITON_INTERPRET"] = "1"
    spec = importlib.util.spec_from_file_location("lmm_edit_triton_forward_interpreted", kernel_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _KERNEL.append(module)


def is_interpreting() -> bool:
    return bool(_KERNEL[0].INTERPRETING)


def run_poisoned(q, keys, values, scales, scale_tensors, masks, config=None) -> torch.Tensor:
    """The kernel's output, written into a buffer that starts as NaN (``config``: launch override)."""
    batch, heads, q_len, head_dim = q.shape
    poisoned = torch.full((batch, q_len, heads * head_dim), float("nan"), dtype=q.dtype)
    found = _KERNEL[0].multi_branch_cross_attention(q, keys, values, scales, scale_tensors, masks, out=poisoned,
                                                     config=config)
    if found is not poisoned:
        raise AssertionError("the kernel did not write into the given out buffer")
    return found


def input_strides(q, keys) -> list[tuple[int, ...]]:
    """Strides as the child sees them (pickling must keep views and stride-0 expansions)."""
    return [tuple(q.stride())] + [tuple(k.stride()) for k in keys]
