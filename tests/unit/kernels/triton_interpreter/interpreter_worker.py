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

INTERPRETED_PACKAGE = "lmm_edit_kernels_interpreted"
_KERNEL: list[ModuleType] = []  # the one kernel module of this worker process


def load_kernel(kernel_file: str) -> None:
    """Process initializer: switch Triton to its interpreter, then import the kernel module."""
    if "triton" in sys.modules:
        raise RuntimeError("triton was imported before TRITON_INTERPRET was set in the interpreter worker")
    os.environ["TRITON_INTERPRET"] = "1"
    # The kernels folder as a package of its own (its modules import each other relatively; it imports
    # neither ComfyUI nor triton at package import), then the kernel module inside it.
    folder = os.path.dirname(kernel_file)
    spec = importlib.util.spec_from_file_location(
        INTERPRETED_PACKAGE, os.path.join(folder, "__init__.py"), submodule_search_locations=[folder]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[INTERPRETED_PACKAGE] = package
    spec.loader.exec_module(package)
    stem = os.path.splitext(os.path.basename(kernel_file))[0]
    _KERNEL.append(importlib.import_module(f"{INTERPRETED_PACKAGE}.{stem}"))


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
