"""prepare-llava on tiny weights, against the arithmetic of LLaVA's llava/model/apply_delta.py (@ c121f04).

The reference below is written from reading that script: both models in fp16, ``param += base`` for every delta
tensor of the base's shape, the base added into the first rows of the embedding and lm_head (the delta has 3
more), ``model.mm_projector.*`` kept, base-only tensors dropped, the delta's config and tokenizer saved.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lmm_edit.cli.prepare_llava_command import main as prepare_main
from lmm_edit.loaders.errors import ModelFileError
from lmm_edit.loaders.llava_delta import apply_delta
from lmm_edit.loaders.smartedit.llava_base import base_rows, open_llava_base
from lmm_edit.selfcheck.hf_llama import hf_llama_shapes, write_hf_shards

V0, W, LAYERS, INTER = 40, 16, 2, 24
LLAMA1 = {"model_type": "llama", "hidden_size": W, "num_hidden_layers": LAYERS, "num_attention_heads": 2,
          "intermediate_size": INTER, "vocab_size": V0, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6}


def llama_tensors(vocab: int, seed: int, dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g).to(dtype) for k, s in hf_llama_shapes(vocab, W, LAYERS, INTER).items()}


@pytest.fixture
def pair(tmp_path):
    """LLaMA-1 base (fp16 safetensors, 2 shards, with an old rotary buffer) and a LLaVA delta (.bin, 3 shards,
    fp32 and fp16 tensors as in the real delta, vocabulary + 3, mm_projector)."""
    base = llama_tensors(V0, seed=1, dtype=torch.float16)
    base["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.arange(4, dtype=torch.float32)
    delta = llama_tensors(V0 + 3, seed=2, dtype=torch.float32)
    delta["model.norm.weight"] = delta["model.norm.weight"].half()
    delta["model.mm_projector.weight"] = torch.randn(W, 8)
    delta["model.mm_projector.bias"] = torch.randn(W)
    write_hf_shards(tmp_path / "llama-7b", base, 2, LLAMA1)
    delta_config = {**LLAMA1, "vocab_size": V0 + 3, "mm_vision_tower": "openai/clip-vit-large-patch14",
                    "mm_hidden_size": 8, "mm_use_im_start_end": True}
    write_hf_shards(tmp_path / "LLaVA-Lightning-7B-delta-v1-1", delta, 3, delta_config, "bin")
    (tmp_path / "LLaVA-Lightning-7B-delta-v1-1" / "tokenizer.model").write_bytes(b"sentencepiece model bytes")
    (tmp_path / "LLaVA-Lightning-7B-delta-v1-1" / "added_tokens.json").write_text('{"<im_patch>": 32000}')
    return tmp_path / "llama-7b", tmp_path / "LLaVA-Lightning-7B-delta-v1-1", base, delta


def reference_apply_delta(base: dict, delta: dict) -> dict:
    base16 = {k: v.half() for k, v in base.items()}
    out = {}
    for name, value in delta.items():
        param = value.half().clone()
        if name not in base16:
            assert name in ("model.mm_projector.weight", "model.mm_projector.bias")
        elif param.shape == base16[name].shape:
            param += base16[name]
        else:
            b = base16[name]
            param[: b.shape[0], : b.shape[1]] += b
        out[name] = param
    return out


def read_folder(folder) -> dict:
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    out = {}
    for shard in sorted(set(index.values())):
        out.update(load_file(folder / shard))
    assert set(out) == set(index)
    return out


def test_merge_equals_apply_delta_bit_for_bit(pair, tmp_path):
    base_dir, delta_dir, base, delta = pair
    target = apply_delta(base_dir, delta_dir, tmp_path / "llava" / "LLaVA-7B-v1", report=lambda _: None)
    got, want = read_folder(target), reference_apply_delta(base, delta)
    assert set(got) == set(want)  # the base's rotary buffer is not written
    for key in want:
        assert got[key].dtype == torch.float16 and torch.equal(got[key], want[key]), key
    assert len(list(target.glob("model-*.safetensors"))) == 3  # one output shard per delta shard


def test_extra_vocabulary_rows_are_the_delta_s_own(pair, tmp_path):
    base_dir, delta_dir, base, delta = pair
    got = read_folder(apply_delta(base_dir, delta_dir, tmp_path / "out", report=lambda _: None))
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(got[key][V0:], delta[key][V0:].half())
        assert torch.equal(got[key][:V0], delta[key][:V0].half() + base[key])


def test_config_and_tokenizer_come_from_the_delta_and_the_loader_accepts_the_result(pair, tmp_path):
    base_dir, delta_dir, _, _ = pair
    target = apply_delta(base_dir, delta_dir, tmp_path / "LLaVA-7B-v1", report=lambda _: None)
    assert (target / "tokenizer.model").read_bytes() == b"sentencepiece model bytes"
    assert json.loads((target / "config.json").read_text())["vocab_size"] == V0 + 3
    llava = open_llava_base(target)
    embed, head = base_rows(llava, V0, W, torch.float32)
    assert llava.rows == V0 + 3 and embed.shape == (V0, W) and head.shape == (V0, W)


def test_command_writes_into_the_named_folder_and_nothing_else(pair, tmp_path, capsys):
    base_dir, delta_dir, _, _ = pair
    out = tmp_path / "models" / "lmm_edit" / "llava" / "LLaVA-7B-v1"
    assert prepare_main(["--base", str(base_dir), "--delta", str(delta_dir), "--out", str(out)]) == 0
    assert "LLaVA-7B-v1" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["LLaVA-7B-v1"]  # no staging folder left


@pytest.mark.parametrize("change, message", [
    ({"max_position_embeddings": 4096, "rope_theta": 10000.0}, "Llama-2 has 4096"),
    ({"num_key_value_heads": 1}, "grouped-query attention"),
    ({"hidden_size": 32}, "another model size than the delta: hidden_size 32 vs delta 16"),
    ({"model_type": "mistral"}, "model_type 'mistral'"),
    ({"rope_theta": 1000000.0}, "rope_theta 1000000.0"),
])
def test_a_base_that_is_not_llama1_of_the_right_size_is_refused(pair, tmp_path, change, message):
    base_dir, delta_dir, _, _ = pair
    config = json.loads((base_dir / "config.json").read_text())
    (base_dir / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ModelFileError, match=message) as err:
        apply_delta(base_dir, delta_dir, tmp_path / "out", report=lambda _: None)
    assert "LLaMA-1" in str(err.value) and not (tmp_path / "out").exists()


def test_a_vicuna_folder_is_refused_by_name(pair, tmp_path):
    base_dir, delta_dir, _, _ = pair
    vicuna = base_dir.rename(tmp_path / "vicuna-7b-v1.1")
    with pytest.raises(ModelFileError, match="Vicuna"):
        apply_delta(vicuna, delta_dir, tmp_path / "out", report=lambda _: None)


def test_an_unexpected_delta_tensor_fails_without_leaving_a_folder(pair, tmp_path):
    base_dir, delta_dir, _, delta = pair
    index = json.loads((delta_dir / "pytorch_model.bin.index.json").read_text())
    torch.save({"model.vision_tower.weight": torch.ones(2)}, delta_dir / "extra.bin")
    index["weight_map"]["model.vision_tower.weight"] = "extra.bin"
    (delta_dir / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelFileError, match="model.vision_tower.weight"):
        apply_delta(base_dir, delta_dir, tmp_path / "llava" / "out", report=lambda _: None)
    assert list((tmp_path / "llava").iterdir()) == []


def test_an_existing_target_is_never_overwritten(pair, tmp_path):
    base_dir, delta_dir, _, _ = pair
    (tmp_path / "out").mkdir()
    with pytest.raises(ModelFileError, match="delete it first"):
        apply_delta(base_dir, delta_dir, tmp_path / "out", report=lambda _: None)
