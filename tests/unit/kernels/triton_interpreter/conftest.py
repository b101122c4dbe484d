"""Runs the Triton kernel under the Triton interpreter (CPU), in one spawned worker process.

TRITON_INTERPRET must be set before triton is first imported (triton's own ``tl.zeros``/``tl.max``
are jit functions decorated at import), and other tests in the session may already have imported
triton. So the kernel runs in a child process that sets the variable itself before importing
triton; this process's environment is never changed, so nothing leaks into other test folders.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import pathlib
from concurrent.futures import ProcessPoolExecutor

import pytest
from unit.kernels.triton_interpreter import interpreter_worker

import lmm_edit.kernels
from lmm_edit.kernels.branches import AttentionBranch, op_arguments

KERNEL_FILE = pathlib.Path(lmm_edit.kernels.__file__).parent / "triton_forward.py"


class InterpretedKernel:
    """Calls into the worker: ``run(q, branches)`` -> ``[B, Lq, H*D]`` from a NaN-filled buffer."""

    def __init__(self, executor: ProcessPoolExecutor) -> None:
        self._executor = executor

    def call(self, function, *args):
        return self._executor.submit(function, *args).result()

    def run(self, q, branches: list[AttentionBranch], config: dict[str, int] | None = None):
        args = op_arguments(q, branches)
        return self.call(interpreter_worker.run_poisoned, q, args.keys, args.values, args.scales,
                         args.scale_tensors, args.masks, config)


@pytest.fixture(scope="module")
def interpreted_triton():
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed; pip install triton to run the interpreter-mode kernel tests")
    executor = ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=interpreter_worker.load_kernel,
        initargs=(str(KERNEL_FILE),),
    )
    with executor:
        kernel = InterpretedKernel(executor)
        assert kernel.call(interpreter_worker.is_interpreting)
        yield kernel
