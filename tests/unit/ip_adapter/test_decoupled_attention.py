"""decoupled_attention equals the IP-Adapter formula written out with explicit softmaxes.

Reference (IP-Adapter, arXiv 2308.06721, eq. for Z_new; docs/kernels.md):
O[b] = softmax(q K_txt^T / sqrt(D)) V_txt + sum_i lambda_i[b] * m_i[b, row] * softmax(q K_i^T / sqrt(D)) V_i,
with K_i = tokens_i W_k^T, V_i = tokens_i W_v^T, per head.
"""

from __future__ import annotations

import pytest
import torch

from lmm_edit.loaders.ip_adapter import ImageBranch, decoupled_attention

FP32_TOLERANCE = 1e-5
HEADS, HEAD_DIM, CONTEXT = 4, 8, 12


def _softmax_attention(q, k, v, heads):
    """[B, L, H*D] inputs, per-head softmax(q k^T / sqrt(D)) v, -> [B, Lq, H*D]."""
    b, lq, width = q.shape
    d = width // heads
    split = lambda x: x.reshape(x.shape[0], x.shape[1], heads, d).permute(0, 2, 1, 3)  # noqa: E731
    scores = split(q) @ split(k).transpose(-1, -2) / d**0.5
    out = torch.softmax(scores, dim=-1) @ split(v)
    return out.permute(0, 2, 1, 3).reshape(b, lq, width)


def _reference(q, k_txt, v_txt, heads, branches):
    out = _softmax_attention(q, k_txt, v_txt, heads)
    for br in branches:
        tokens = br.tokens.expand(q.shape[0], -1, -1)
        image = _softmax_attention(q, tokens @ br.to_k_ip.T, tokens @ br.to_v_ip.T, heads)
        weight = torch.as_tensor(br.weight, dtype=q.dtype).reshape(-1, 1, 1)
        mask = 1.0 if br.mask is None else br.mask.reshape(br.mask.shape[0], -1, 1)
        out = out + weight * mask * image
    return out


def _case(batch=3, lq=20, lt=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    width = HEADS * HEAD_DIM
    q, k, v = (torch.randn(batch, n, width, generator=g) for n in (lq, lt, lt))
    return g, q, k, v


def _branch(g, batch, n_tokens, weight=1.0, mask=None):
    width = HEADS * HEAD_DIM
    return ImageBranch(
        tokens=torch.randn(batch, n_tokens, CONTEXT, generator=g),
        to_k_ip=torch.randn(width, CONTEXT, generator=g) / CONTEXT**0.5,
        to_v_ip=torch.randn(width, CONTEXT, generator=g) / CONTEXT**0.5,
        weight=weight,
        mask=mask,
    )


def test_two_branches_with_per_batch_lambda_and_query_mask_equal_the_formula():
    g, q, k, v = _case()
    mask = torch.rand(3, 20, generator=g)
    branches = [
        _branch(g, 3, 4, weight=torch.tensor([1.0, 0.5, 0.0])),
        _branch(g, 3, 16, weight=0.7, mask=mask),
    ]
    torch.testing.assert_close(
        decoupled_attention(q, k, v, HEADS, branches), _reference(q, k, v, HEADS, branches),
        atol=FP32_TOLERANCE, rtol=FP32_TOLERANCE,
    )


def test_one_row_of_image_tokens_serves_every_batch_row():
    g, q, k, v = _case()
    branch = _branch(g, 1, 4, weight=0.8)
    torch.testing.assert_close(
        decoupled_attention(q, k, v, HEADS, [branch]), _reference(q, k, v, HEADS, [branch]),
        atol=FP32_TOLERANCE, rtol=FP32_TOLERANCE,
    )


def test_lambda_zero_and_no_branches_give_plain_text_attention():
    g, q, k, v = _case()
    text_only = _softmax_attention(q, k, v, HEADS)
    torch.testing.assert_close(decoupled_attention(q, k, v, HEADS, []), text_only, atol=FP32_TOLERANCE, rtol=0)
    torch.testing.assert_close(
        decoupled_attention(q, k, v, HEADS, [_branch(g, 3, 4, weight=0.0)]), text_only, atol=FP32_TOLERANCE, rtol=0
    )


def test_one_softmax_per_branch_differs_from_one_softmax_over_concatenated_tokens():
    g, q, k, v = _case()
    branch = _branch(g, 3, 4)
    k_cat = torch.cat([k, branch.tokens @ branch.to_k_ip.T], dim=1)
    v_cat = torch.cat([v, branch.tokens @ branch.to_v_ip.T], dim=1)
    concatenated = _softmax_attention(q, k_cat, v_cat, HEADS)
    assert (decoupled_attention(q, k, v, HEADS, [branch]) - concatenated).abs().max() > 0.1


def test_tokens_for_another_batch_size_are_refused_with_the_fix():
    g, q, k, v = _case(batch=3)
    with pytest.raises(ValueError, match=r"tokens must be \[B=3 or 1"):
        decoupled_attention(q, k, v, HEADS, [_branch(g, 2, 4)])


def test_layer_weights_of_another_width_are_refused():
    g, q, k, v = _case()
    branch = _branch(g, 3, 4)
    wrong = ImageBranch(branch.tokens, branch.to_k_ip[:16], branch.to_v_ip[:16])
    with pytest.raises(ValueError, match=r"to_k_ip must be \[H\*D=32"):
        decoupled_attention(q, k, v, HEADS, [wrong])
