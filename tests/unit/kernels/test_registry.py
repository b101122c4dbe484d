"""Backend selection: declared constraints decide, up front; overrides are strict and per thread."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch

from lmm_edit.kernels import (
    ATTENTION,
    MULTI_BRANCH_CROSS_ATTENTION,
    BackendNotFoundError,
    KernelProbeError,
    NoCapableBackendError,
    list_backends,
    probe,
    select_backend,
    use_backend,
)
from lmm_edit.kernels import backends as backends_module
from lmm_edit.kernels import eager as eager_module
from lmm_edit.kernels.constraints import CallDescription, OpConstraints, describe_call
from lmm_edit.kernels.registry import Backend, BackendRegistry

TRITON = backends_module.build_registry().backend("triton").ops[MULTI_BRANCH_CROSS_ATTENTION]
# The Triton declaration minus its GPU query, so CUDA calls can be described on a CPU-only machine.
TRITON_WITHOUT_CAPABILITY_QUERY = dataclasses.replace(TRITON, min_cuda_capability=None)


def _cuda_call(**overrides) -> CallDescription:
    fields = {"device": torch.device("cuda"), "dtype": torch.float16, "head_dim": 40, "kv_lengths": (77, 16),
              "innermost_contiguous": True}
    return CallDescription(**{**fields, **overrides})


def test_sd15_and_sdxl_calls_on_cuda_fit_the_triton_declaration():
    for head_dim in (40, 80, 160, 64):
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            assert TRITON_WITHOUT_CAPABILITY_QUERY.reasons_to_refuse(_cuda_call(head_dim=head_dim, dtype=dtype)) == []


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"device": torch.device("cpu")}, "device cpu not in ['cuda']"),
        ({"dtype": torch.float64}, "dtype torch.float64 not in"),
        ({"head_dim": 96}, "head dim 96 not in [40, 64, 80, 128, 160]"),
        ({"head_dim": 512}, "head dim 512 not in"),
        ({"kv_lengths": (77, 4, 4, 4, 4)}, "5 branches, at most 4"),
        ({"kv_lengths": (77, 0)}, "branch 1 has Lkv 0, needs 1..2048"),
        ({"kv_lengths": (4096,)}, "branch 0 has Lkv 4096, needs 1..2048"),
        ({"innermost_contiguous": False}, "not contiguous along the head dim"),
        ({"mixed_dtypes": (torch.float32,)}, "several dtypes"),
        ({"mixed_devices": ("cpu",)}, "several devices"),
    ],
)
def test_triton_declaration_refuses_each_unsupported_call_with_its_reason(overrides, reason):
    reasons = TRITON_WITHOUT_CAPABILITY_QUERY.reasons_to_refuse(_cuda_call(**overrides))
    assert any(reason in r for r in reasons), reasons


def test_describe_call_reads_device_dtype_head_dim_lengths_and_strides_from_the_tensors():
    q = torch.randn(2, 7, 3 * 40).view(2, 7, 3, 40).transpose(1, 2)  # ComfyUI layout view: D contiguous
    k, v = torch.randn(2, 3, 77, 40), torch.randn(2, 3, 77, 40)
    ki, vi = torch.randn(2, 3, 40, 4).transpose(-1, -2), torch.randn(2, 3, 4, 40)  # D strided
    call = describe_call(q, k, v, ki, vi)
    assert (call.device.type, call.dtype, call.head_dim, call.kv_lengths) == ("cpu", torch.float32, 40, (77, 4))
    assert not call.innermost_contiguous
    assert describe_call(q, k, v).innermost_contiguous


def test_on_cpu_the_eager_backend_is_selected_and_triton_says_why_not():
    q, k, v = torch.randn(1, 2, 5, 64), torch.randn(1, 2, 77, 64), torch.randn(1, 2, 77, 64)
    assert select_backend(MULTI_BRANCH_CROSS_ATTENTION, q, k, v) == "eager"
    assert select_backend(ATTENTION, q, k, v) == "eager"
    with use_backend("triton"), pytest.raises(NoCapableBackendError, match=r"triton \(forced.*device cpu"):
        select_backend(MULTI_BRANCH_CROSS_ATTENTION, q, k, v)


def test_a_call_no_backend_accepts_lists_every_backends_reason():
    q, k, v = torch.randn(1, 1, 5, 64), torch.randn(1, 1, 0, 64), torch.randn(1, 1, 0, 64)
    with pytest.raises(NoCapableBackendError) as error:
        select_backend(MULTI_BRANCH_CROSS_ATTENTION, q, k, v)
    assert "triton:" in str(error.value) and "eager: branch 0 has Lkv 0" in str(error.value)


def _call(dtype: torch.dtype) -> CallDescription:
    q, k, v = (torch.randn(1, 1, 2, 8, dtype=dtype) for _ in range(3))
    return describe_call(q, k, v)


def _fake_registry(first_reason: str | None = None) -> BackendRegistry:
    fussy = Backend("fussy", "eager", {ATTENTION: OpConstraints(dtypes=frozenset({torch.float16}))}, first_reason)
    anything = Backend("anything", "eager", {ATTENTION: OpConstraints()})
    return BackendRegistry([fussy, anything], priority=["fussy", "anything"])


def test_the_first_backend_in_priority_order_that_accepts_the_call_wins():
    registry = _fake_registry()
    assert registry.select(ATTENTION, _call(torch.float16)) == "fussy"
    assert registry.select(ATTENTION, _call(torch.float32)) == "anything"


def test_an_unavailable_backend_is_skipped_and_keeps_its_reason():
    registry = _fake_registry(first_reason="fussylib is not installed (pip install fussylib)")
    assert registry.select(ATTENTION, _call(torch.float16)) == "anything"
    assert registry.list_backends()["fussy"] == {
        "available": False, "unavailable_reason": "fussylib is not installed (pip install fussylib)", "ops": [ATTENTION]
    }


def test_triton_is_unavailable_with_an_install_hint_when_not_installed(monkeypatch):
    monkeypatch.setattr(backends_module.importlib.util, "find_spec", lambda name: None)
    registry = backends_module.build_registry()
    status = registry.list_backends()["triton"]
    assert not status["available"] and "pip install triton" in status["unavailable_reason"]
    q, k, v = torch.randn(1, 2, 5, 64), torch.randn(1, 2, 77, 64), torch.randn(1, 2, 77, 64)
    assert registry.reasons_to_refuse("triton", MULTI_BRANCH_CROSS_ATTENTION, describe_call(q, k, v)) == [
        status["unavailable_reason"]
    ]


def test_list_backends_names_triton_then_eager_with_their_ops():
    listed = list_backends()
    assert list(listed) == ["triton", "eager"]
    assert listed["eager"]["ops"] == [ATTENTION, MULTI_BRANCH_CROSS_ATTENTION]
    assert listed["triton"]["ops"] == [MULTI_BRANCH_CROSS_ATTENTION]


def test_use_backend_rejects_unknown_names_before_any_call():
    with pytest.raises(BackendNotFoundError, match="'cudnn'.*known: \\['eager', 'triton'\\]"):
        with use_backend("cudnn"):
            pass


def test_use_backend_nests_and_restores_the_previous_choice():
    registry = _fake_registry()
    fp16 = _call(torch.float16)
    with registry.use_backend("anything"):
        with registry.use_backend("fussy"):
            assert registry.select(ATTENTION, fp16) == "fussy"
        assert registry.select(ATTENTION, fp16) == "anything"
    assert registry.select(ATTENTION, fp16) == "fussy"


def test_use_backend_affects_only_its_own_thread():
    registry = _fake_registry()
    fp16 = _call(torch.float16)
    seen = []
    with registry.use_backend("anything"):
        worker = threading.Thread(target=lambda: seen.append(registry.select(ATTENTION, fp16)))
        worker.start()
        worker.join()
        assert registry.select(ATTENTION, fp16) == "anything"
    assert seen == ["fussy"]


@pytest.mark.parametrize("op_name", [MULTI_BRANCH_CROSS_ATTENTION, ATTENTION])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_probe_runs_the_selected_backend_and_names_it(op_name, dtype):
    assert probe(op_name, "cpu", dtype, 80) == "eager"


def test_probe_reports_a_crashing_kernel_with_backend_device_dtype_head_dim_and_fix(monkeypatch):
    def crashing(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(eager_module, MULTI_BRANCH_CROSS_ATTENTION, crashing)
    with pytest.raises(KernelProbeError) as error:
        probe(MULTI_BRANCH_CROSS_ATTENTION, "cpu", torch.float16, 40)
    message = str(error.value)
    for part in ("eager backend of multi_branch_cross_attention", "cpu", "torch.float16", "head dim 40",
                 "illegal memory access", "Fix:"):
        assert part in message


def test_probe_reports_a_kernel_that_computes_wrong_values(monkeypatch):
    original = eager_module.multi_branch_cross_attention

    def drops_the_image_branch(q, keys, values, scales, scale_tensors, masks):
        return original(q, keys[:1], values[:1], scales[:1], [None], [None])

    monkeypatch.setattr(eager_module, MULTI_BRANCH_CROSS_ATTENTION, drops_the_image_branch)
    with pytest.raises(KernelProbeError, match="computed wrong values.*max error"):
        probe(MULTI_BRANCH_CROSS_ATTENTION, "cpu", torch.float32, 64)


def test_probe_of_a_call_no_backend_accepts_lists_the_reasons():
    with pytest.raises(NoCapableBackendError, match="dtype torch.int32 not in"):
        probe(ATTENTION, "cpu", torch.int32, 64)


def test_the_triton_backend_declares_the_branch_slots_its_kernel_compiles():
    """kernels/triton_forward.py is loaded standalone (no package imports), so its MAX_BRANCHES is read here."""
    import ast
    import pathlib

    from lmm_edit.kernels.backends import TRITON_MAX_BRANCHES

    source = (pathlib.Path(backends_module.__file__).parent / "triton_forward.py").read_text()
    (value,) = [node.value.value for node in ast.parse(source).body
                if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["MAX_BRANCHES"]]
    assert value == TRITON_MAX_BRANCHES
