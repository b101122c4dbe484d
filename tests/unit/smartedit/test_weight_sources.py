"""Each LMM weight comes from the file the reference takes it from (fixture README "Where the LLM weights come
from"), on the factory's release files whose sources differ on purpose."""

from __future__ import annotations

import pytest
import torch

from lmm_edit.loaders.smartedit import load_smartedit
from lmm_edit.selfcheck.smartedit_release import write_smartedit_release

LLM = "model.base_model.model."


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    paths = write_smartedit_release(tmp_path_factory.mktemp("sources"), seed=9, safetensors_copies=False)
    return paths, load_smartedit(paths.bundle, paths.llava, paths.clip, qformer_heads=paths.qformer_heads)


def test_embedding_rows(loaded):
    paths, models = loaded
    v0 = paths.sizes.base_vocab
    embed = models.lmm.llm.embed_tokens.weight
    assert torch.equal(embed[:v0], paths.tensors["llava_embed"][:v0])
    assert torch.equal(embed[v0:], paths.tensors["llm"][LLM + "embed_tokens.weight"][v0:])


def test_lm_head_rows(loaded):
    paths, models = loaded
    v0 = paths.sizes.base_vocab
    head = models.lmm.llm.lm_head.weight
    assert torch.equal(head[:v0], paths.tensors["llava_head"][:v0])
    assert torch.equal(head[v0:], paths.tensors["embeddings_qformer"]["lm_head.weight"][v0:])


def test_mm_projector_from_the_embeddings_qformer_file(loaded):
    paths, models = loaded
    assert torch.equal(models.lmm.mm_projector.weight, paths.tensors["embeddings_qformer"]["mm_projector.weight"])
    assert torch.equal(models.lmm.mm_projector.bias, paths.tensors["embeddings_qformer"]["mm_projector.bias"])


def test_layers_and_lora_from_the_llm_file(loaded):
    paths, models = loaded
    llm = paths.tensors["llm"]
    scale = 16 / 8  # data/adapter_config.json lora_alpha / r (the factory writes alpha = 2 r)
    layer = models.lmm.llm.layers[0].self_attn
    base = llm[LLM + "layers.0.self_attn.q_proj.weight"]
    lora = llm[LLM + "layers.0.self_attn.q_proj.lora_B.default.weight"] @ llm[LLM + "layers.0.self_attn.q_proj.lora_A.default.weight"]
    assert torch.allclose(layer.q_proj.weight, base + scale * lora, atol=1e-6)
    assert torch.equal(layer.k_proj.weight, llm[LLM + "layers.0.self_attn.k_proj.weight"])
    assert torch.equal(models.lmm.llm.norm.weight, llm[LLM + "norm.weight"])


def test_clip_tower_saved_without_the_vision_model_prefix_loads_the_same(loaded, tmp_path):
    """transformers 5 saves CLIPVisionModel keys without `vision_model.`; both layouts give the same tower."""
    from safetensors.torch import save_file

    from lmm_edit.loaders.smartedit.files import read_tensors

    paths, models = loaded
    state = read_tensors(paths.clip / "model.safetensors")
    (tmp_path / "clip").mkdir()
    save_file({k[len("vision_model.") :]: v for k, v in state.items()}, str(tmp_path / "clip" / "model.safetensors"))
    (tmp_path / "clip" / "config.json").write_text((paths.clip / "config.json").read_text())
    other = load_smartedit(paths.bundle, paths.llava, tmp_path / "clip", qformer_heads=paths.qformer_heads)
    pixels = torch.randn(1, 3, paths.sizes.image_size, paths.sizes.image_size)
    with torch.no_grad():
        assert torch.equal(other.lmm.vision(pixels), models.lmm.vision(pixels))
