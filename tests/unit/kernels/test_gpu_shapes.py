"""The compiled Triton kernel at real SD 1.5 / SDXL attn2 shapes on a CUDA GPU.

Shapes from docs/kernels.md (Shapes): SD 1.5 at 512 px (B = 3 for dual CFG, 8 heads, D 40/80/160,
Lq 4096/1024/256/64), SDXL at 1024 px (D 64, 10 or 20 heads, Lq 4096/1024); text 77 tokens, image
branches of 4 (IP-Adapter), 16 (Plus) and 257 (full-face) tokens. Outputs start as NaN.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from unit.kernels.attention_cases import (
    AttentionCase,
    assert_close_to_reference,
    build_inputs,
    reference_output,
)

from lmm_edit.kernels import (
    MULTI_BRANCH_CROSS_ATTENTION,
    AttentionBranch,
    multi_branch_cross_attention,
    probe,
    select_backend,
)
from lmm_edit.kernels.backends import REGISTRY
from lmm_edit.kernels.branches import op_arguments

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton (pip install triton)"),
]

# (heads, Lq, D, image token counts)
SHAPES = {
    "sd15-64x64-plus": (8, 4096, 40, (16,)),
    "sd15-64x64-base": (8, 4096, 40, (4,)),
    "sd15-32x32-plus": (8, 1024, 80, (16,)),
    "sd15-16x16-fullface": (8, 256, 160, (257,)),
    "sd15-middle-two-adapters": (8, 64, 160, (16, 4)),
    "sdxl-64x64-plus": (10, 4096, 64, (16,)),
    "sdxl-32x32-base-three-adapters": (20, 1024, 64, (4, 16, 4)),
}


def _cuda_inputs(name: str, dtype: torch.dtype):
    heads, q_len, head_dim, image_tokens = SHAPES[name]
    case = AttentionCase(batch=3, heads=heads, q_len=q_len, head_dim=head_dim, kv_lengths=(77, *image_tokens),
                         dtype=dtype, comfy_layout=True)
    q, branches = build_inputs(case)

    def to_cuda(t):
        return None if t is None else t.cuda()

    branches = [AttentionBranch(to_cuda(b.k), to_cuda(b.v), b.scale if isinstance(b.scale, float) else to_cuda(b.scale),
                                to_cuda(b.mask)) for b in branches]
    return q.cuda(), branches


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", list(SHAPES))
def test_triton_kernel_matches_the_definition_at_real_shapes(name, dtype):
    q, branches = _cuda_inputs(name, dtype)
    args = op_arguments(q, branches)
    batch, heads, q_len, head_dim = q.shape
    poisoned = torch.full((batch, q_len, heads * head_dim), float("nan"), dtype=dtype, device="cuda")
    kernel = REGISTRY.implementation("triton", MULTI_BRANCH_CROSS_ATTENTION)
    kernel(q, args.keys, args.values, args.scales, args.scale_tensors, args.masks, out=poisoned)
    assert_close_to_reference(poisoned, reference_output(q, branches), dtype)


def test_fp32_inputs_take_exact_dots_not_tf32():
    q, branches = _cuda_inputs("sd15-32x32-plus", torch.float32)
    assert select_backend(MULTI_BRANCH_CROSS_ATTENTION, q, *[t for b in branches for t in (b.k, b.v)]) == "triton"
    assert_close_to_reference(multi_branch_cross_attention(q, branches), reference_output(q, branches), torch.float32)


def test_the_public_op_selects_triton_on_cuda_and_matches_the_definition():
    q, branches = _cuda_inputs("sdxl-64x64-plus", torch.float16)
    assert select_backend(MULTI_BRANCH_CROSS_ATTENTION, q, *[t for b in branches for t in (b.k, b.v)]) == "triton"
    assert_close_to_reference(multi_branch_cross_attention(q, branches), reference_output(q, branches), torch.float16)


@pytest.mark.parametrize("head_dim", [40, 64, 80, 128, 160])
def test_probe_selects_and_passes_the_triton_backend(head_dim):
    assert probe(MULTI_BRANCH_CROSS_ATTENTION, "cuda", torch.float16, head_dim) == "triton"


def test_the_op_is_capturable_in_a_cuda_graph_because_it_never_synchronises():
    q, branches = _cuda_inputs("sd15-32x32-plus", torch.float16)
    multi_branch_cross_attention(q, branches)  # compile the kernel outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = multi_branch_cross_attention(q, branches)
    graph.replay()
    torch.cuda.synchronize()
    assert_close_to_reference(captured, reference_output(q, branches), torch.float16)
