"""Bad attention inputs are refused before any kernel runs, with the expected shape and a fix.

``attention()`` checks its inputs as ``multi_branch_cross_attention()`` checks each branch (SDPA alone
runs k of 77 tokens with v of 5 by using 5 keys); the Triton launcher refuses what its kernel would
compute wrongly (Lkv 0, a head-dim stride other than 1) even when called directly, not through the
registry. The launcher's checks need no triton, so they are tested here on CPU tensors.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lmm_edit.kernels import AttentionBranch, attention, multi_branch_cross_attention
from lmm_edit.kernels.launch_checks import check_launch


def _qkv(kv_len=7, v_len=None, batch=2, heads=2, head_dim=40, q_len=12):
    return (torch.randn(batch, heads, q_len, head_dim), torch.randn(batch, heads, kv_len, head_dim),
            torch.randn(batch, heads, kv_len if v_len is None else v_len, head_dim))


def test_attention_refuses_k_and_v_of_different_token_counts():
    q, k, v = _qkv(kv_len=77, v_len=5)
    with pytest.raises(ValueError, match="k has 77 tokens, v 5. Fix: project k and v from the same tokens"):
        attention(q, k, v)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda q, k, v: (q, k[:, :1], v), "k must be [B=2, H=2, Lkv, D=40] like q (2, 2, 12, 40), found (2, 1, 7, 40)"),
        (lambda q, k, v: (q, k, v[..., :32]), "v must be [B=2, H=2, Lkv, D=40]"),
        (lambda q, k, v: (q, k[:1], v[:1]), "k must be [B=2, H=2, Lkv, D=40]"),
        (lambda q, k, v: (q, k.half(), v.half()), "k is torch.float16 on cpu, q is torch.float32 on cpu"),
        (lambda q, k, v: (q[0], k, v), "q must be [B, H, Lq, D], found (2, 12, 40)"),
        (lambda q, k, v: (q, k[:, :, :0], v[:, :, :0]), "hold no token (Lkv 0)"),
    ],
    ids=["heads", "head-dim", "batch", "dtype", "q-rank", "no-token"],
)
def test_attention_refuses_malformed_inputs_with_the_expected_shape_and_the_fix(change, message):
    with pytest.raises(ValueError, match="Fix") as error:
        attention(*change(*_qkv()))
    assert message in str(error.value)


def test_an_image_branch_without_tokens_is_refused_by_the_multi_branch_op_too():
    q, k, v = _qkv()
    empty = AttentionBranch(k[:, :, :0], v[:, :, :0], 0.5)
    with pytest.raises(ValueError, match="attention branch 1: k and v hold no token"):
        multi_branch_cross_attention(q, [AttentionBranch(k, v), empty])


def _launch_args(q, k, v, mask=None, scale_tensor=None):
    return q, [k], [v], [1.0], [scale_tensor], [mask]


def _check(*args, interpreting=True):
    check_launch(*args, max_branches=4, interpreting=interpreting)


def test_the_launch_checks_accept_the_layouts_the_kernel_reads():
    q, k, v = _qkv()
    comfy = torch.randn(2, 7, 2 * 40).view(2, 7, 2, 40).transpose(1, 2)  # [B, L, H*D] seen as [B, H, L, D]
    _check(*_launch_args(q, comfy, comfy, torch.ones(2, 12), torch.ones(2)))
    _check(*_launch_args(q, k[:1].expand_as(k), v[:1].expand_as(v)))  # a batch of 1 expanded, stride 0


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda q, k, v: _launch_args(q, k[:, :, :0], v[:, :, :0]), "hold no token (Lkv 0)"),
        (lambda q, k, v: _launch_args(q, torch.randn(2, 2, 40, 7).transpose(2, 3), v),
         "branch 0 k has stride 7 along the head dim"),
        (lambda q, k, v: _launch_args(torch.randn(2, 2, 40, 12).transpose(2, 3), k, v),
         "q has stride 12 along the head dim"),
        (lambda q, k, v: _launch_args(q, k, v[:, :, :5]), "k has 7 tokens, v 5"),
        (lambda q, k, v: (q, [k], [v], [1.0], [None], []), "one value, scale, scale tensor and mask per key"),
        (lambda q, k, v: (q, [k] * 5, [v] * 5, [1.0] * 5, [None] * 5, [None] * 5), "takes 1..4 branches, got 5"),
        (lambda q, k, v: _launch_args(q, k, v, mask=torch.ones(2, 5)), "mask must be [B=2, Lq=12]"),
        (lambda q, k, v: _launch_args(q, k, v, scale_tensor=torch.ones(3)), "scale tensor must be [B=2]"),
        (lambda q, k, v: _launch_args(*(torch.randn(1, 1, 4, 320) for _ in range(3))), "head dim 320 outside 1..256"),
        (lambda q, k, v: _launch_args(q.double(), k.double(), v.double()), "dtype torch.float64 not in"),
    ],
    ids=["lkv-0", "k-stride", "q-stride", "kv-tokens", "list-lengths", "branches", "mask", "scale", "head-dim", "dtype"],
)
def test_the_launch_checks_refuse_what_the_kernel_would_compute_wrongly(build, message):
    with pytest.raises(ValueError, match="Fix") as error:
        _check(*build(*_qkv()))
    assert message in str(error.value)


def test_outside_the_interpreter_the_kernel_refuses_cpu_tensors():
    with pytest.raises(ValueError, match="runs on CUDA devices"):
        _check(*_launch_args(*_qkv()), interpreting=False)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="the direct call imports triton")
@pytest.mark.parametrize("bad", ["lkv-0", "k-stride"])
def test_a_direct_call_of_the_triton_launcher_refuses_before_launching(bad):
    from lmm_edit.kernels import triton_forward

    q, k, v = _qkv(head_dim=64)
    if bad == "lkv-0":
        k, v = k[:, :, :0], v[:, :, :0]
        message = "Lkv 0"
    else:
        k = torch.randn(2, 2, 64, 7).transpose(2, 3)
        message = "stride 7 along the head dim"
    with pytest.raises(ValueError, match=message):
        triton_forward.multi_branch_cross_attention(*_launch_args(q, k, v))
