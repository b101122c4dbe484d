"""The Triton kernel, run by the Triton interpreter on the CPU, matches the float64 definition.

Small shapes (B*H <= 4, Lq <= 129): the interpreter runs one program after another through numpy.
It proves indexing and math, not GPU compilation or speed (docs/kernels.md, Triton kernel notes); the GPU tests
in ../test_gpu_shapes.py cover those. Every output buffer starts as NaN, so a row or column the
kernel never writes fails the comparison.
"""

from __future__ import annotations

import importlib
import importlib.util

import pytest
import torch
from unit.kernels.attention_cases import (
    AttentionCase,
    assert_close_to_reference,
    build_inputs,
    reference_output,
)
from unit.kernels.triton_interpreter import interpreter_worker

from lmm_edit.kernels import MULTI_BRANCH_CROSS_ATTENTION, AttentionBranch
from lmm_edit.kernels.backends import REGISTRY
from lmm_edit.kernels.constraints import describe_call

KV_LENGTHS = (1, 4, 16, 77, 257, 576)
HEAD_DIMS = (40, 64, 80, 128, 160)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton is not installed; pip install triton")


@pytest.fixture(scope="module")
def triton_forward():
    """The backend module imported normally (compiled mode), for its pure-Python launch heuristics."""
    return importlib.import_module("lmm_edit.kernels.triton_forward")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_three_branches_with_masks_and_per_batch_scales_match_the_definition(interpreted_triton, head_dim, dtype):
    case = AttentionCase(batch=2, heads=2, q_len=37, head_dim=head_dim, kv_lengths=(77, 4, 16), dtype=dtype,
                         comfy_layout=head_dim in (40, 128), seed=head_dim)
    q, branches = build_inputs(case)
    assert_close_to_reference(interpreted_triton.run(q, branches), reference_output(q, branches), dtype)


@pytest.mark.parametrize("kv_len", KV_LENGTHS)
def test_every_adapter_token_count_matches_the_definition(interpreted_triton, kv_len):
    case = AttentionCase(batch=1, heads=2, q_len=40, head_dim=64, kv_lengths=(77, kv_len), dtype=torch.float16,
                         seed=kv_len)
    q, branches = build_inputs(case)
    assert_close_to_reference(interpreted_triton.run(q, branches), reference_output(q, branches), q.dtype)


@pytest.mark.parametrize("kv_lengths", [(77,), (77, 4, 257, 16)], ids=["text-only", "four-branches"])
def test_one_to_the_maximum_number_of_branches_match_the_definition(interpreted_triton, kv_lengths):
    case = AttentionCase(batch=2, heads=1, q_len=129, head_dim=80, kv_lengths=kv_lengths, dtype=torch.float16)
    q, branches = build_inputs(case)
    assert_close_to_reference(interpreted_triton.run(q, branches), reference_output(q, branches), q.dtype)


def test_image_tokens_of_one_batch_row_expanded_to_the_batch_are_read_through_stride_zero(interpreted_triton):
    case = AttentionCase(batch=3, heads=2, q_len=20, head_dim=40, kv_lengths=(77, 16), dtype=torch.float32,
                         comfy_layout=True)
    q, (text, image) = build_inputs(case)
    shared = AttentionBranch(image.k[:1].expand_as(image.k), image.v[:1].expand_as(image.v), 0.9, image.mask)
    assert interpreted_triton.call(interpreter_worker.input_strides, q, [shared.k])[1][0] == 0  # no copy on the way
    assert_close_to_reference(interpreted_triton.run(q, [text, shared]), reference_output(q, [text, shared]),
                              q.dtype)


@pytest.mark.parametrize("silenced_by", ["per-batch scale 0", "mask 0"])
def test_a_branch_weighted_zero_everywhere_is_never_computed(interpreted_triton, silenced_by):
    # NaN image values would poison the output if the branch were computed and multiplied by 0.
    case = AttentionCase(batch=2, heads=2, q_len=30, head_dim=64, kv_lengths=(77, 4), dtype=torch.float16)
    q, (text, image) = build_inputs(case)
    nan_values = torch.full_like(image.v, float("nan"))
    if silenced_by == "mask 0":
        silenced = AttentionBranch(image.k, nan_values, 1.0, torch.zeros(2, 30))
    else:
        silenced = AttentionBranch(image.k, nan_values, torch.zeros(2), None)
    assert_close_to_reference(interpreted_triton.run(q, [text, silenced]), reference_output(q, [text]),
                              q.dtype)


@pytest.mark.parametrize("head_dim", [64, 160])
def test_the_small_grid_block_sizes_match_the_definition(interpreted_triton, triton_forward, head_dim):
    # What launch_config picks for the SD 1.5 middle block on a 132-SM GPU: 16-row query blocks.
    config = triton_forward.launch_config(64, head_dim, [77, 16], 24, 132)
    assert config["BLOCK_M"] == 16
    case = AttentionCase(batch=1, heads=2, q_len=37, head_dim=head_dim, kv_lengths=(77, 16), dtype=torch.float16)
    q, branches = build_inputs(case)
    found = interpreted_triton.run(q, branches, config)
    assert_close_to_reference(found, reference_output(q, branches), q.dtype)


def test_the_registry_refuses_these_interpreter_calls_only_for_their_device():
    case = AttentionCase(batch=2, heads=2, q_len=37, head_dim=80, kv_lengths=(77, 4, 16), dtype=torch.bfloat16,
                         comfy_layout=True)
    q, branches = build_inputs(case)
    call = describe_call(q, *[t for branch in branches for t in (branch.k, branch.v)])
    assert REGISTRY.reasons_to_refuse("triton", MULTI_BRANCH_CROSS_ATTENTION, call) == ["device cpu not in ['cuda']"]


def test_launch_config_pads_head_dims_and_respects_the_16_wide_dot_floor(triton_forward):
    config = triton_forward.launch_config(4096, 40, [77, 4], 24, None)
    assert (config["DP"], config["BLOCK_N"], config["BLOCK_M"]) == (64, 32, 64)
    assert triton_forward.launch_config(256, 160, [4], 24, None)["DP"] == 256
    assert triton_forward.launch_config(256, 160, [4, 1], 24, None)["BLOCK_N"] == 16


def test_launch_config_shrinks_the_query_block_for_small_grids(triton_forward):
    # SD 1.5 middle block: Lq 64, B*H 24 on a 132-SM H100 (docs/kernels.md, Memory traffic).
    assert triton_forward.launch_config(64, 160, [77, 16], 24, 132)["BLOCK_M"] == 16
    assert triton_forward.launch_config(4096, 40, [77, 16], 24, 132)["BLOCK_M"] == 64
