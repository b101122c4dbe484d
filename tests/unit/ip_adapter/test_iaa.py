"""The Image Alignment Adapter equals a hand-written reference of the paper's module.

Reference (InsightEdit, arXiv 2411.17323, Fig. 3, written out with plain tensor algebra from the
checkpoint's raw tensors, not with our modules): Mapper = MLP (Linear, GELU, Linear, ...) on each
``[MM]`` hidden state, averaged over the r states into one CLIP-image-embedding-sized vector; Linear
to ``N x D_ctx``; LayerNorm over each token's ``D_ctx`` channels.
"""

from __future__ import annotations

import math

import pytest
import torch

from lmm_edit.loaders.ip_adapter import (
    INPUT_MM_HIDDEN_STATES,
    INSIGHTEDIT_IAA,
    ImageAlignmentAdapter,
    load_image_adapter,
)
from lmm_edit.loaders.ip_adapter.iaa import IAAConfig
from lmm_edit.selfcheck.ip_adapter_files import tiny_iaa_state, write_adapter_file

FP32_TOLERANCE = 1e-5


def _iaa(state: dict) -> ImageAlignmentAdapter:
    """An IAA sized from the file sections' shapes and loaded strictly, as load_image_adapter builds it."""
    flat = {f"{name}.{k}": v for name in ("mapper", "image_proj") for k, v in state[name].items()}
    module = ImageAlignmentAdapter(IAAConfig.from_shapes({k: tuple(v.shape) for k, v in flat.items()}))
    module.load_state_dict(flat, strict=True)
    return module


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))  # exact GELU (Hendrycks & Gimpel)


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + eps) * weight + bias


def paper_iaa_reference(state: dict[str, dict[str, torch.Tensor]], h: torch.Tensor) -> torch.Tensor:
    """h ``[r, D_llm]`` -> f_img ``[N, D_ctx]``: Mapper -> Linear -> LayerNorm."""
    mapper = state["mapper"]
    depth = len([k for k in mapper if k.endswith(".weight")])
    x = h
    for i in range(depth):
        if i:
            x = _gelu(x)
        x = x @ mapper[f"{2 * i}.weight"].T + mapper[f"{2 * i}.bias"]
    clip_vector = x.mean(dim=0)  # [D_clip], the "1 x 768" estimate of CLIP(I_tar)
    proj = state["image_proj"]
    context_dim = proj["norm.weight"].shape[0]
    tokens = (proj["proj.weight"] @ clip_vector + proj["proj.bias"]).reshape(-1, context_dim)  # [N, D_ctx]
    return _layer_norm(tokens, proj["norm.weight"], proj["norm.bias"])


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_iaa_file_forward_equals_the_paper_reference(tmp_path, suffix):
    state = tiny_iaa_state(llm_dim=48, mapper_dims=(40,), clip_dim=24, num_tokens=4)
    adapter = load_image_adapter(write_adapter_file(state, tmp_path / f"iaa{suffix}"))
    h = torch.randn(32, 48, generator=torch.Generator().manual_seed(3))  # r = 32 [MM] states

    tokens = adapter.image_tokens(h)

    assert adapter.family == INSIGHTEDIT_IAA and adapter.input_kind == INPUT_MM_HIDDEN_STATES
    assert tokens.shape == (1, 4, 32)
    torch.testing.assert_close(tokens[0], paper_iaa_reference(state, h), atol=FP32_TOLERANCE, rtol=FP32_TOLERANCE)


def test_iaa_sizes_and_depth_come_from_the_checkpoint():
    state = tiny_iaa_state(llm_dim=20, mapper_dims=(36, 28), clip_dim=12, num_tokens=6, context_dim=16)
    iaa = _iaa(state)
    h = torch.randn(2, 5, 20, generator=torch.Generator().manual_seed(4))  # batch of 2, r = 5

    tokens = iaa(h)

    assert (iaa.llm_dim, iaa.num_tokens, iaa.context_dim) == (20, 6, 16)
    assert tokens.shape == (2, 6, 16)
    for b in range(2):
        torch.testing.assert_close(tokens[b], paper_iaa_reference(state, h[b]), atol=FP32_TOLERANCE, rtol=0)


def test_iaa_clip_embedding_is_the_mapper_output_the_alignment_loss_compares():
    state = tiny_iaa_state(llm_dim=48, mapper_dims=(40,), clip_dim=24)
    iaa = _iaa(state)
    h = torch.randn(32, 48, generator=torch.Generator().manual_seed(5))
    mapper = state["mapper"]
    expected = (_gelu(h @ mapper["0.weight"].T + mapper["0.bias"]) @ mapper["2.weight"].T + mapper["2.bias"]).mean(0)

    torch.testing.assert_close(iaa.clip_embedding(h)[0], expected, atol=FP32_TOLERANCE, rtol=0)


def test_iaa_refuses_hidden_states_of_another_lmm_width():
    state = tiny_iaa_state(llm_dim=48)
    iaa = _iaa(state)
    with pytest.raises(ValueError, match="width 48"):
        iaa(torch.zeros(32, 64))
