"""Runs the Triton kernel under the Triton interpreter (CPU), in one spawned worker process.

TRITON_INTERPRET must be set before triton is first imported (triton's own ``tl.zeros``/``tl.max``
are jit functions decorated at import), and other tests in the session may already have imported
triton. So the kernel runs in a child process that sets the variable itself before importing
triton; this process's environment is never changed, so nothing leaks into other test folders.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import multiprocessing
import pathlib
from concurrent.futures import ProcessPoolExecutor

import pytest
from unit.kernels.triton_interpreter import interpreter_worker

import lmm_edit.kernels
from lmm_edit.kernels.branches import AttentionBranch, op_arguments

KERNEL_FILE = pathlib.Path(lmm_edit.kernels.__file__).parent / "triton_forward.py"
# triton 3.5.1's interpreter (the one torch 2.9 pulls in) fails inside tl.dot with numpy 2.x
# ("only 0-dimensional arrays can be converted to Python scalars"); 3.9.0 was verified.
MIN_INTERPRETER_TRITON = (3, 9)


def _triton_version() -> tuple[int, ...]:
    return tuple(int(part) for part in importlib.metadata.version("triton").split(".")[:2])


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
    if _triton_version() < MIN_INTERPRETER_TRITON:
        pytest.skip(f"triton {importlib.metadata.version('triton')} is older than the verified interpreter "
                    f"(>= {'.'.join(map(str, MIN_INTERPRETER_TRITON))}): pip install -U triton")
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
