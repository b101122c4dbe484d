"""The LLaMA decoder's transformers-4.34 switch (`norm_output="input"`, `rope_theta`) against the installed
transformers' LlamaRMSNorm / LlamaRotaryEmbedding / LlamaModel (their code for these is the same as 4.34.1's:
`hidden_states.to(input_dtype)` after the fp32 normalisation, inverse frequencies from `rope_theta`)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig as HFLlamaConfig
from transformers.models.llama.modeling_llama import LlamaModel, LlamaRMSNorm, LlamaRotaryEmbedding

from lmm_edit.loaders.llama import LlamaConfig, LlamaLM, RMSNorm, rope_inv_freq


@pytest.mark.parametrize(("weight_dtype", "input_dtype"), [
    (torch.float16, torch.float32), (torch.float32, torch.bfloat16), (torch.bfloat16, torch.bfloat16),
])
def test_rmsnorm_434_casts_back_to_the_input_dtype_like_transformers(weight_dtype, input_dtype):
    torch.manual_seed(0)
    x = (torch.randn(2, 5, 64) * 3).to(input_dtype)
    weight = (1 + 0.1 * torch.randn(64)).to(weight_dtype)
    ours = RMSNorm(64, 1e-5, output="input")
    theirs = LlamaRMSNorm(64, eps=1e-5)
    with torch.no_grad():
        ours.weight.copy_(weight.float())
        theirs.weight.copy_(weight.float())
    ours, theirs = ours.to(weight_dtype), theirs.to(weight_dtype)
    a, b = ours(x), theirs(x)
    assert a.dtype == b.dtype and torch.equal(a, b)


def test_rmsnorm_428_mode_keeps_the_weight_dtype():
    x = torch.randn(3, 16)
    norm = RMSNorm(16, 1e-6).to(torch.float16)  # SmartEdit's (transformers 4.28) behaviour
    assert norm(x).dtype == torch.float16
    assert RMSNorm(16, 1e-6, output="input").to(torch.float16)(x).dtype == torch.float32


def test_inverse_frequencies_follow_rope_theta_like_transformers():
    config = HFLlamaConfig(hidden_size=64, num_attention_heads=4, rope_theta=500000.0)
    assert torch.allclose(rope_inv_freq(16, 500000.0), LlamaRotaryEmbedding(config).inv_freq.float(), rtol=1e-6, atol=0)


def test_llama2_decoder_equals_transformers_llama_model():
    torch.manual_seed(0)
    hf_config = HFLlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                              vocab_size=50, rms_norm_eps=1e-5, rope_theta=20000.0, max_position_embeddings=128)
    reference = LlamaModel(hf_config).eval()
    ours = LlamaLM(LlamaConfig(64, 2, 4, 128, 50, rms_eps=1e-5, rope_theta=20000.0, norm_output="input"))
    state = dict(reference.state_dict())
    state["lm_head.weight"] = torch.zeros(50, 64)
    state["inv_freq"] = rope_inv_freq(16, 20000.0)
    ours.load_state_dict(state, strict=True)
    embeds = torch.randn(1, 12, 64)
    with torch.no_grad():
        expected = reference(inputs_embeds=embeds).last_hidden_state
        assert (ours(embeds) - expected).abs().max() < 1e-5
