"""The eager backend computes decoupled cross-attention as the float64 definition does."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as functional
from unit.kernels.attention_cases import (
    AttentionCase,
    assert_close_to_reference,
    build_inputs,
    reference_output,
)

from lmm_edit.kernels import AttentionBranch, attention, multi_branch_cross_attention, use_backend

KV_LENGTHS = (1, 4, 16, 77, 257, 576)  # one token .. 2 full-face images (docs/kernels.md, Shapes)
HEAD_DIMS = (40, 64, 80, 128, 160)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _random_cases() -> list[AttentionCase]:
    draw = random.Random(5)
    cases = []
    for dtype in DTYPES:
        for head_dim in HEAD_DIMS:
            branches = draw.randint(1, 3)
            cases.append(AttentionCase(
                batch=draw.randint(1, 3),
                heads=draw.randint(1, 3),
                q_len=draw.choice((1, 37, 64, 100, 129)),
                head_dim=head_dim,
                kv_lengths=tuple(draw.choice(KV_LENGTHS) for _ in range(branches)),
                dtype=dtype,
                masked=tuple(index > 0 and draw.random() < 0.7 for index in range(branches)),
                tensor_scale=tuple(index > 0 and draw.random() < 0.5 for index in range(branches)),
                comfy_layout=draw.random() < 0.5,
                seed=draw.randint(0, 10_000),
            ))
    return cases


@pytest.fixture(autouse=True)
def _eager_backend():
    with use_backend("eager"):
        yield


@pytest.mark.parametrize("case", _random_cases(), ids=str)
def test_eager_matches_float64_definition_on_random_shapes(case):
    q, branches = build_inputs(case)
    found = multi_branch_cross_attention(q, branches)
    assert found.dtype == case.dtype
    assert_close_to_reference(found, reference_output(q, branches), case.dtype)


@pytest.mark.parametrize("kv_len", KV_LENGTHS)
def test_eager_matches_float64_definition_at_every_adapter_token_count(kv_len):
    case = AttentionCase(batch=2, heads=2, q_len=50, head_dim=64, kv_lengths=(77, kv_len), dtype=torch.float32)
    q, branches = build_inputs(case)
    assert_close_to_reference(multi_branch_cross_attention(q, branches), reference_output(q, branches), case.dtype)


def test_branches_keep_separate_softmaxes_unlike_one_softmax_over_concatenated_tokens():
    # docs/kernels.md: concatenating K/V gives a convex combination, not o_txt + lambda * o_img.
    case = AttentionCase(batch=1, heads=2, q_len=32, head_dim=40, kv_lengths=(77, 16), dtype=torch.float64,
                         masked=(False, False), tensor_scale=(False, False))
    q, branches = build_inputs(case)
    text, image = branches
    found = multi_branch_cross_attention(q, [text, AttentionBranch(image.k, image.v, 1.0)])
    concatenated = functional.scaled_dot_product_attention(
        q, torch.cat([text.k, image.k], dim=2), torch.cat([text.v, image.v], dim=2)
    ).transpose(1, 2).reshape(found.shape)
    assert (found - concatenated).abs().max() > 0.1
    assert_close_to_reference(found, reference_output(q, [text, AttentionBranch(image.k, image.v, 1.0)]), q.dtype)


def test_a_branch_with_scale_zero_contributes_nothing():
    case = AttentionCase(batch=2, heads=2, q_len=20, head_dim=64, kv_lengths=(77, 4), dtype=torch.float32)
    q, (text, image) = build_inputs(case)
    found = multi_branch_cross_attention(q, [text, AttentionBranch(image.k, image.v, 0.0, image.mask)])
    assert_close_to_reference(found, reference_output(q, [text]), q.dtype)


def test_every_documented_mask_shape_weights_the_same_query_rows():
    case = AttentionCase(batch=2, heads=2, q_len=24, head_dim=40, kv_lengths=(77, 16), dtype=torch.float64,
                         masked=(False, False), tensor_scale=(False, False))
    q, (text, image) = build_inputs(case)
    rows = torch.rand(24, dtype=torch.float64)
    expected = reference_output(q, [text, AttentionBranch(image.k, image.v, 0.8, rows.expand(2, 24))])
    for mask in (rows.expand(2, 24), rows.expand(2, 24)[..., None], rows[None], rows):
        found = multi_branch_cross_attention(q, [text, AttentionBranch(image.k, image.v, 0.8, mask)])
        assert_close_to_reference(found, expected, q.dtype)


def test_every_documented_scale_form_weights_the_same_batch_rows():
    case = AttentionCase(batch=3, heads=1, q_len=8, head_dim=64, kv_lengths=(77, 4), dtype=torch.float64,
                         masked=(False, False), tensor_scale=(False, False))
    q, (text, image) = build_inputs(case)
    lam = torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64)
    expected = reference_output(q, [text, AttentionBranch(image.k, image.v, lam)])
    for scale in (lam, lam.view(3, 1, 1)):  # [B] and IPAdapter_plus's unfold_batch [B, 1, 1]
        found = multi_branch_cross_attention(q, [text, AttentionBranch(image.k, image.v, scale)])
        assert_close_to_reference(found, expected, q.dtype)


def test_image_tokens_of_one_batch_row_expanded_to_the_batch_need_no_copy():
    case = AttentionCase(batch=3, heads=2, q_len=16, head_dim=80, kv_lengths=(77, 16), dtype=torch.float32)
    q, (text, image) = build_inputs(case)
    shared = AttentionBranch(image.k[:1].expand_as(image.k), image.v[:1].expand_as(image.v), 0.6, image.mask)
    assert_close_to_reference(multi_branch_cross_attention(q, [text, shared]), reference_output(q, [text, shared]),
                              q.dtype)


@pytest.mark.parametrize(
    ("branch_kwargs", "message"),
    [
        ({"k_heads": 3}, "must be [B=2, H=2, Lkv, D=40]"),
        ({"mask": torch.rand(2, 5)}, "per-query-row weight broadcastable to [B=2, Lq=12]"),
        ({"scale": torch.rand(4)}, "1 or B=2 values"),
        ({"k_dtype": torch.float16}, "cast and move"),
    ],
)
def test_malformed_branches_are_refused_with_the_expected_shape_and_the_fix(branch_kwargs, message):
    q = torch.randn(2, 2, 12, 40)
    k = torch.randn(2, branch_kwargs.get("k_heads", 2), 7, 40).to(branch_kwargs.get("k_dtype", torch.float32))
    branch = AttentionBranch(k, torch.randn(2, 2, 7, 40), branch_kwargs.get("scale", 1.0), branch_kwargs.get("mask"))
    with pytest.raises(ValueError, match="Fix") as error:
        multi_branch_cross_attention(q, [branch])
    assert message in str(error.value)


def test_plain_attention_matches_the_float64_definition_and_keeps_the_query_layout():
    case = AttentionCase(batch=2, heads=4, q_len=33, head_dim=64, kv_lengths=(257,), dtype=torch.float32,
                         masked=(False,), tensor_scale=(False,))
    q, (branch,) = build_inputs(case)
    found = attention(q, branch.k, branch.v)
    assert found.shape == q.shape
    expected = reference_output(q, [branch]).view(2, 33, 4, 64).transpose(1, 2)
    assert_close_to_reference(found, expected, q.dtype)
