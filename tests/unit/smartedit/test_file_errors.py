"""Issue 14, item 2 on SmartEdit's files: every damaged file gives a ModelFileError naming the file, the key where
there is one, what was expected and found, and what to do; the checks the node used to make run in the loader."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lmm_edit.loaders.errors import ModelFileError
from lmm_edit.loaders.smartedit import find_bundle, load_bridge, load_lmm, load_smartedit, load_unet_ldm
from lmm_edit.loaders.smartedit.files import read_tensors


def _load(r, **kwargs):
    return load_smartedit(r.bundle, r.llava, r.clip, qformer_heads=r.qformer_heads, **kwargs)


def _edit(path, change) -> None:
    """Rewrite a weight file (.bin or .safetensors) after ``change(state)``."""
    state = read_tensors(path)
    change(state)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)


def _check(err: ModelFileError, file_name: str, *words: str) -> None:
    """The message names the file (its path ends with ``file_name``), holds ``words`` and a fix."""
    assert err.file.endswith(file_name), (err.file, file_name)
    assert err.expected and err.found and err.fix
    assert file_name in str(err)
    for word in words:
        assert word in str(err), (word, str(err))


@pytest.mark.parametrize("file_format", ["bin", "safetensors"])
def test_a_tensor_of_the_wrong_shape_is_named_with_both_shapes(release, file_format):
    bundle = find_bundle(release.bundle, file_format=file_format)
    key = "modulate_transformer.layers.0.self_attn.q_proj.bias"
    _edit(bundle.bim, lambda s: s.__setitem__(key, s[key][:-3].clone()))
    with pytest.raises(ModelFileError) as info:
        load_bridge(bundle, qformer_heads=release.qformer_heads)
    n = release.tensors["bim"][key].shape[0]
    _check(info.value, bundle.bim.name, key, f"shape [{n}]", f"shape [{n - 3}]", "download")


def test_a_missing_tensor_is_named_not_a_bare_key_error(release):
    bundle = find_bundle(release.bundle, file_format="bin")
    key = "sd_qformer.encoder.layer.0.attention.output.dense.bias"
    _edit(bundle.embeddings_qformer, lambda s: s.pop(key))
    with pytest.raises(ModelFileError) as info:
        load_bridge(bundle, qformer_heads=release.qformer_heads)
    _check(info.value, bundle.embeddings_qformer.name, "missing", key, "download")


def test_a_tensor_the_sizes_are_read_from_is_named_when_missing(release):
    """LlamaConfig.from_shapes used to raise KeyError('layers.0.mlp.gate_proj.weight')."""
    bundle = find_bundle(release.bundle, file_format="bin")
    key = "model.base_model.model.layers.0.mlp.gate_proj.weight"
    _edit(bundle.llm, lambda s: s.pop(key))
    with pytest.raises(ModelFileError) as info:
        load_lmm(bundle, release.llava, release.clip)
    _check(info.value, bundle.llm.name, key, "no such tensor", "SmartEdit release files")


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_integer_or_bool_weights_are_refused_by_key(release, dtype):
    bundle = find_bundle(release.bundle, file_format="safetensors")
    key = "modulate_head.bias"
    _edit(bundle.bim, lambda s: s.__setitem__(key, s[key].to(dtype)))
    with pytest.raises(ModelFileError) as info:
        load_bridge(bundle, qformer_heads=release.qformer_heads)
    _check(info.value, bundle.bim.name, key, "floating-point", str(dtype), "download")


@pytest.mark.parametrize("where", ["llm", "llava"])
def test_integer_embedding_rows_are_refused_before_any_cast(release, where):
    """The embedding rows are cast to the compute dtype while assembled: an int table must be refused first."""
    if where == "llm":
        path, key = find_bundle(release.bundle, file_format="bin").llm, "model.base_model.model.embed_tokens.weight"
    else:
        path, key = release.llava / "pytorch_model-00001-of-00002.bin", "model.embed_tokens.weight"
    _edit(path, lambda s: s.__setitem__(key, s[key].to(torch.int16)))
    with pytest.raises(ModelFileError) as info:
        _load(release, file_format="bin")
    _check(info.value, path.name, key, "floating-point", "torch.int16", "download")


def _index(release) -> dict:
    return json.loads((release.llava / "pytorch_model.bin.index.json").read_text())


def _write_index(release, index) -> None:
    (release.llava / "pytorch_model.bin.index.json").write_text(json.dumps(index))


def test_shard_index_without_weight_map(release):
    _write_index(release, {"metadata": {}})
    with pytest.raises(ModelFileError) as info:
        _load(release)
    _check(info.value, "pytorch_model.bin.index.json", "weight_map", "no weight_map", "download the index")


def test_shard_index_pointing_at_the_wrong_shard(release):
    index = _index(release)
    index["weight_map"]["model.embed_tokens.weight"] = "pytorch_model-00002-of-00002.bin"
    _write_index(release, index)
    with pytest.raises(ModelFileError) as info:
        _load(release)
    _check(info.value, "pytorch_model-00002-of-00002.bin", "model.embed_tokens.weight",
           "pytorch_model.bin.index.json places it here", "download the index and every shard")


def test_shard_listed_in_the_index_but_missing(release):
    (release.llava / "pytorch_model-00002-of-00002.bin").unlink()
    with pytest.raises(ModelFileError) as info:
        _load(release)
    _check(info.value, "pytorch_model-00002-of-00002.bin", "1 missing", "download every shard")


@pytest.mark.parametrize("content", [b'["r", 8]', '{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "base": "vicu\xf1a"}'.encode("latin-1")],
                         ids=["not-an-object", "not-utf8"])
def test_adapter_config_that_is_not_a_utf8_json_object(release, content):
    (release.bundle / "adapter_config.json").write_bytes(content)
    with pytest.raises(ModelFileError) as info:
        find_bundle(release.bundle)
    _check(info.value, "adapter_config.json", "data/adapter_config.json")
    assert ("a JSON list" in str(info.value)) if content.startswith(b"[") else ("not UTF-8" in str(info.value))


def test_adapter_config_with_a_rank_of_zero(release):
    config = json.loads((release.bundle / "adapter_config.json").read_text())
    (release.bundle / "adapter_config.json").write_text(json.dumps(dict(config, r=0)))
    with pytest.raises(ModelFileError) as info:
        find_bundle(release.bundle)
    _check(info.value, "adapter_config.json", '"r": 0', "positive integer")


def test_tokenizer_model_sentencepiece_cannot_parse(release):
    release.tokenizer.write_bytes(b"<html>not a SentencePiece model</html>")
    with pytest.raises(ModelFileError) as info:
        _load(release)
    _check(info.value, "tokenizer.model", "SentencePiece cannot parse", "copy tokenizer.model")


def test_clip_config_whose_head_count_does_not_divide_the_width(release):
    config = json.loads((release.clip / "config.json").read_text())
    (release.clip / "config.json").write_text(json.dumps(dict(config, num_attention_heads=5)))
    with pytest.raises(ModelFileError) as info:
        _load(release)
    _check(info.value, "config.json", f"dividing the vision width {release.sizes.clip_hidden}", "5 heads",
           "config.json that came with these CLIP weights")


def test_the_336_px_tower_is_refused_by_the_loader_itself(release):
    """Was only refused by the node (check_vision_size after load_lmm); now every entry point gets it."""
    path = release.clip / "model.safetensors"
    key = "vision_model.embeddings.position_embedding.weight"
    grid = 336 // release.sizes.patch
    _edit(path, lambda s: s.__setitem__(key, torch.zeros(grid * grid + 1, s[key].shape[1])))
    with pytest.raises(ModelFileError) as info:
        load_lmm(find_bundle(release.bundle), release.llava, release.clip)
    _check(info.value, "model.safetensors", "224 px", "a vision tower for 336 px images", "LLaVA-1.5")


def test_a_unet_without_eight_input_channels_is_refused_by_the_loader_itself(release):
    """A text-to-image UNet (4 input channels) in place of SmartEdit's: the node used to notice only after ComfyUI's
    model detection; load_unet_ldm (nodes, command line, batch) refuses it now."""
    bundle = find_bundle(release.bundle, file_format="bin")
    _edit(bundle.unet, lambda s: s.__setitem__("unet.conv_in.weight", s["unet.conv_in.weight"][:, :4].clone()))
    with pytest.raises(ModelFileError) as info:
        load_unet_ldm(bundle)
    _check(info.value, bundle.unet.name, "unet.conv_in.weight", "4 input channels", "text-to-image", "unet-<step>")


def test_legacy_format_bin_loads_and_a_truncated_one_says_truncated(release):
    """A non-zip torch.save file cannot be memory-mapped: it is read without mmap instead of called truncated."""
    bundle = find_bundle(release.bundle, file_format="bin")
    state = read_tensors(bundle.bim)
    torch.save(state, bundle.bim, _use_new_zipfile_serialization=False)
    bridge = load_bridge(bundle, qformer_heads=release.qformer_heads)
    assert torch.equal(bridge.bim.state_dict()["modulate_head.weight"], release.tensors["bim"]["modulate_head.weight"])
    bundle.bim.write_bytes(bundle.bim.read_bytes()[: bundle.bim.stat().st_size // 2])
    with pytest.raises(ModelFileError) as info:
        load_bridge(bundle, qformer_heads=release.qformer_heads)
    _check(info.value, bundle.bim.name, "legacy-format", "truncated", "download the file again")


def test_a_bundle_folder_that_cannot_be_listed_is_a_permission_problem(release, monkeypatch):
    """chmod 000 on the folder; root lists such folders anyway, so under root the OS refusal is played by iterdir."""
    release.bundle.chmod(0)
    real_iterdir = Path.iterdir

    def refusing_iterdir(self):
        if self == release.bundle:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    if os.geteuid() == 0:
        monkeypatch.setattr(Path, "iterdir", refusing_iterdir)
    try:
        with pytest.raises(ModelFileError) as info:
            find_bundle(release.bundle)
    finally:
        release.bundle.chmod(0o755)
    _check(info.value, release.bundle.name, "permission denied", "chmod -R a+rX")
