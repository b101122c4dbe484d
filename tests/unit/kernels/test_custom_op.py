"""torch.compile sees multi-branch attention as one opaque custom op with a correct fake."""

from __future__ import annotations

import torch
from torch.fx.experimental.proxy_tensor import make_fx
from unit.kernels.attention_cases import AttentionCase, build_inputs

from lmm_edit.kernels import AttentionBranch, multi_branch_cross_attention

OP = torch.ops.lmm_edit.multi_branch_cross_attention.default


def _call_targets(graph_module: torch.fx.GraphModule) -> list:
    return [node.target for node in graph_module.graph.nodes if node.op == "call_function"]


def _two_branch_inputs():
    case = AttentionCase(batch=2, heads=2, q_len=24, head_dim=40, kv_lengths=(77, 4), dtype=torch.float16,
                         comfy_layout=True)
    return build_inputs(case)


def test_a_fake_tensor_trace_holds_one_fused_op_and_no_attention_call():
    q, (text, image) = _two_branch_inputs()

    def decoupled(q, k_txt, v_txt, k_img, v_img, lam, mask):
        return multi_branch_cross_attention(q, [AttentionBranch(k_txt, v_txt), AttentionBranch(k_img, v_img, lam, mask)])

    traced = make_fx(decoupled, tracing_mode="fake")(q, text.k, text.v, image.k, image.v, image.scale, image.mask)
    targets = _call_targets(traced)
    assert targets.count(OP) == 1
    assert not [t for t in targets if "attention" in str(t) and t is not OP]
    (node,) = [n for n in traced.graph.nodes if n.target is OP]
    assert tuple(node.meta["val"].shape) == (2, 24, 2 * 40)
    assert node.meta["val"].dtype == torch.float16


def test_the_fake_implementation_agrees_with_the_real_op():
    q, (text, image) = _two_branch_inputs()
    masks = [None, image.mask[..., 0]]
    torch.library.opcheck(
        OP,
        (q, [text.k, image.k], [text.v, image.v], [1.0, 1.0], [None, image.scale], masks, "eager"),
        test_utils=("test_schema", "test_faketensor"),
    )


def test_torch_compile_fullgraph_captures_the_op_as_a_single_node():
    q, (text, image) = _two_branch_inputs()
    captured = []

    def record(graph_module, example_inputs):
        captured.append(_call_targets(graph_module))
        return graph_module.forward

    @torch.compile(backend=record, fullgraph=True)
    def decoupled(q, k_txt, v_txt, k_img, v_img, mask):
        return multi_branch_cross_attention(q, [AttentionBranch(k_txt, v_txt), AttentionBranch(k_img, v_img, 0.7, mask)])

    decoupled(q, text.k, text.v, image.k, image.v, image.mask)
    (targets,) = captured
    # Dynamo records the op packet (torch.ops.lmm_edit.multi_branch_cross_attention), not the overload.
    assert [t for t in targets if "lmm_edit" in str(t)] == [torch.ops.lmm_edit.multi_branch_cross_attention]
    assert not [t for t in targets if "scaled_dot_product" in str(t)]
