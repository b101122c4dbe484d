"""The trunk's attention against torch.nn.MultiheadAttention (ImageBind's `MultiheadAttention` subclass calls it
as `forward(x, x, x, need_weights=False, attn_mask=None)`, sequence first), at sizes other than the fixture's."""

from __future__ import annotations

import pytest
import torch

from lmm_edit.loaders.any2pix.imagebind_trunk import TrunkAttention, TrunkConfig


@pytest.mark.parametrize(("width", "heads", "bias_kv"), [(64, 16, False), (48, 12, True), (40, 5, True)])
def test_attention_equals_torch_multihead_attention(width, heads, bias_kv, max_err):
    torch.manual_seed(width + heads)
    ref = torch.nn.MultiheadAttention(width, heads, bias=True, add_bias_kv=bias_kv).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.3)
    config = TrunkConfig(width=width, blocks=1, heads=heads, mlp_hidden=4 * width, pre_norm=False, bias_kv=bias_kv)
    ours = TrunkAttention(config, torch.nn).eval()
    state = {"in_proj.weight": ref.in_proj_weight, "in_proj.bias": ref.in_proj_bias,
             "out_proj.weight": ref.out_proj.weight, "out_proj.bias": ref.out_proj.bias}
    if bias_kv:
        state |= {"bias_k": ref.bias_k, "bias_v": ref.bias_v}
    ours.load_state_dict(state)
    x = torch.randn(3, 11, width)  # [B, L, D]
    with torch.no_grad():
        expected = ref(x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), need_weights=False)[0].transpose(0, 1)
        err = max_err(ours(x), expected)
    print(f"\nwidth {width}, {heads} heads, bias_kv {bias_kv}: max abs err {err:.1e}")
    assert err <= 1e-5
