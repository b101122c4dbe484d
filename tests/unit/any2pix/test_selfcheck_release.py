"""The tiny InstructAny2Pix release of selfcheck/any2pix_models.py loads through the release loaders, and its
rigged LLM writes a valid answer whose output embedding still depends on the instruction and the inputs."""

from __future__ import annotations

import pytest
import torch

from lmm_edit.loaders.any2pix import (
    SamplingSettings,
    encode_instruction,
    load_llm,
    load_prior,
    parse_markers,
    read_generation_config,
)
from lmm_edit.loaders.any2pix.imagebind_file import read_constructor_args, read_encoder_tensors
from lmm_edit.selfcheck.any2pix_models import DEFAULT_CAPTION, EMBED, write_imagebind, write_llm, write_prior


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    folder = write_llm(tmp_path_factory.mktemp("release") / "llm-retrained")
    model, tokenizer = load_llm(folder)
    settings = SamplingSettings.from_generation_config(read_generation_config(folder), tokenizer.ids.eos)
    return model, tokenizer, settings


def _encode(llm, instruction: str, aux: torch.Tensor, kinds, seed: int = 0, temperature: float = 0.3):
    model, tokenizer, settings = llm
    marked = parse_markers(instruction, {(k, 1) for k in kinds})
    settings = SamplingSettings(temperature, settings.top_k, settings.top_p, settings.max_new_tokens, settings.eos_ids)
    return encode_instruction(model, tokenizer, marked.text, aux, [k for k, _ in marked.inputs], settings,
                              torch.Generator().manual_seed(seed))


def test_rigged_answer_at_any_temperature(llm):
    aux = torch.randn(2, EMBED)
    for seed, temperature in ((0, 0.3), (1, 1.0), (2, 0.0)):
        result = _encode(llm, "add [audio1] to [image1]", aux, ("image", "audio"), seed, temperature)
        assert result.caption == DEFAULT_CAPTION
        assert result.answer_text.startswith("<base>") and "<im_gen>[red]<video>" in result.answer_text
        assert result.base.index == 1  # the image (second marker); chosen among images only


def test_embedding_depends_on_instruction_and_inputs(llm):
    aux = torch.randn(2, EMBED)
    a = _encode(llm, "add [audio1] to [image1]", aux, ("image", "audio")).image_embeds
    b = _encode(llm, "put [audio1] into [image1]", aux, ("image", "audio")).image_embeds
    c = _encode(llm, "add [audio1] to [image1]", aux.flip(0), ("image", "audio")).image_embeds
    assert torch.isfinite(a).all()
    assert (a - b).abs().max() > 1e-4 and (a - c).abs().max() > 1e-4


def test_imagebind_and_prior_files_in_release_layout(tmp_path):
    path = write_imagebind(tmp_path / "imagebind_huge.pth")
    keys = set(read_encoder_tensors(path))
    assert "modality_heads.vision.2.weight" in keys and "modality_trunks.audio.blocks.0.attn.bias_k" in keys
    args, found = read_constructor_args(path, None)
    assert found == tmp_path / "imagebind_kwargs.json" and args["vision_num_heads"] == 2
    bundle = load_prior(write_prior(tmp_path / "prior"))  # gpt2-medium's 16 heads, CLIP's head_dim 64 defaults
    assert bundle.prior.config.embed_dim == EMBED and bundle.empty_text_ids == [8, 9]
