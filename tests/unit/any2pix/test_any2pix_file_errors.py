"""Issue 14, item 2 on InstructAny2Pix's files: shard indexes, wrong shapes and dtypes, unparsable tokenizers each
give a ModelFileError naming the file, the key and what to do."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmm_edit.loaders.any2pix import Any2PixTokenizer, load_global_local_adapter, load_llm
from lmm_edit.loaders.errors import ModelFileError


@pytest.fixture()
def llm_copy(fx, tmp_path):
    folder = tmp_path / "llm-retrained"
    shutil.copytree(fx.llm_dir, folder)
    (folder / "pytorch_model.bin").unlink()  # the safetensors file is the one read
    return folder


def _check(err: ModelFileError, file_name: str, *words: str) -> None:
    assert err.file.endswith(file_name), (err.file, file_name)
    assert err.expected and err.found and err.fix
    for word in (file_name, *words):
        assert word in str(err), (word, str(err))


def _shard(folder, wrong_place: str | None = None) -> list[str]:
    """Split model.safetensors into two shards with an index; ``wrong_place``: a key the index puts in the other."""
    state = load_file(folder / "model.safetensors")
    keys = sorted(state)
    names = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    parts = {names[0]: keys[: len(keys) // 2], names[1]: keys[len(keys) // 2 :]}
    for name, part in parts.items():
        save_file({k: state[k] for k in part}, folder / name)
    (folder / "model.safetensors").unlink()
    weight_map = {k: n for n, part in parts.items() for k in part}
    if wrong_place is not None:
        weight_map[wrong_place] = names[1] if weight_map[wrong_place] == names[0] else names[0]
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return keys


def test_an_index_placing_a_tensor_in_the_wrong_shard_names_both(llm_copy):
    key = "model.layers.0.self_attn.q_proj.weight"
    _shard(llm_copy, wrong_place=key)
    with pytest.raises(ModelFileError) as info:
        load_llm(llm_copy)
    _check(info.value, ".safetensors", key, "model.safetensors.index.json places it here", "download the index")


def test_an_index_without_weight_map(llm_copy):
    _shard(llm_copy)
    (llm_copy / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 1}}))
    with pytest.raises(ModelFileError) as info:
        load_llm(llm_copy)
    _check(info.value, "model.safetensors.index.json", "no weight_map", "download the index")


@pytest.mark.parametrize(("change", "words"), [
    (lambda t: t.to(torch.int32), ("floating-point", "torch.int32")),
    (lambda t: t[:-1].clone(), ("shape [",)),
], ids=["int-weights", "wrong-shape"])
def test_llm_tensors_of_the_wrong_dtype_or_shape_are_named(llm_copy, change, words):
    key = "model.norm.weight"
    state = load_file(llm_copy / "model.safetensors")
    state[key] = change(state[key])
    save_file(state, llm_copy / "model.safetensors")
    with pytest.raises(ModelFileError) as info:
        load_llm(llm_copy)
    _check(info.value, "llm-retrained", key, *words, "llm-retrained")


def test_a_tokenizer_model_sentencepiece_cannot_parse(fx, tmp_path):
    folder = tmp_path / "tokenizer"
    shutil.copytree(fx.llm_dir / "tokenizer", folder)
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.model").write_bytes(b"\x00\x01 not a model")
    with pytest.raises(ModelFileError) as info:
        Any2PixTokenizer(folder)
    _check(info.value, "tokenizer.model", "SentencePiece cannot parse", "restore tokenizer.model")


def test_a_tokenizer_json_tokenizers_cannot_parse(fx, tmp_path):
    folder = tmp_path / "tokenizer"
    shutil.copytree(fx.llm_dir / "tokenizer", folder)
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": 3}')
    with pytest.raises(ModelFileError) as info:
        Any2PixTokenizer(folder)
    _check(info.value, "tokenizer.json", "cannot parse", "restore tokenizer.json")


def test_integer_adapter_weights_are_refused_by_key(fx, tmp_path):
    state = load_file(fx.adapter_files[1])
    state["image_proj.raw_embed"] = state["image_proj.raw_embed"].to(torch.int64)
    bad = tmp_path / "ip_adapter_global_local_2_view.safetensors"
    save_file(state, bad)
    with pytest.raises(ModelFileError) as info:
        load_global_local_adapter(bad)
    _check(info.value, bad.name, "image_proj.raw_embed", "floating-point", "torch.int64")
