"""Issue 14, item 2 on the file readers every loader shares (loaders/weight_files.py, loaders/shard_index.py), tried
through a real loader (the IP-Adapter's) where one reads the file: each message names the file and says what to do."""

from __future__ import annotations

import argparse
import builtins
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lmm_edit.loaders.errors import ModelFileError
from lmm_edit.loaders.ip_adapter import load_image_adapter
from lmm_edit.loaders.shard_index import check_shard_holds, read_shard_index
from lmm_edit.loaders.weight_files import read_json, read_tensors
from lmm_edit.selfcheck.ip_adapter_files import tiny_ip_adapter_state, write_adapter_file


def _check(err: ModelFileError, path: Path, *words: str) -> None:
    assert err.file == str(path), (err.file, path)
    assert err.expected and err.found and err.fix
    assert str(path) in str(err)
    for word in words:
        assert word in str(err), (word, str(err))


def _deny_reading(path: Path, monkeypatch) -> None:
    """chmod 000; root reads such files anyway, so under root the OS refusal is played by ``open``."""
    path.chmod(0)
    if os.geteuid() != 0:
        return
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_a_file_that_exists_but_cannot_be_read_is_a_permission_problem(tmp_path, monkeypatch, suffix):
    path = write_adapter_file(tiny_ip_adapter_state("basic"), tmp_path / f"ip-adapter_sd15{suffix}")
    _deny_reading(path, monkeypatch)
    with pytest.raises(ModelFileError) as info:
        load_image_adapter(path)
    _check(info.value, path, "permission denied", "chmod a+r", "chown")
    assert "nothing at this path" not in str(info.value)


def test_weights_only_refusal_shows_the_refused_global_without_colour_codes(tmp_path):
    state = tiny_ip_adapter_state("basic")
    path = tmp_path / "ip-adapter_sd15.bin"
    torch.save({**state, "training_args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(ModelFileError) as info:
        load_image_adapter(path)
    _check(info.value, path, "Unsupported global", "argparse.Namespace", "re-save the adapter")
    assert "\x1b" not in str(info.value)
    assert "Weights only load failed" not in str(info.value)


def test_a_truncated_zip_format_bin_says_truncated_and_to_download_again(tmp_path):
    path = write_adapter_file(tiny_ip_adapter_state("basic"), tmp_path / "ip-adapter_sd15.bin")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError) as info:
        load_image_adapter(path)
    _check(info.value, path, "zip-format", "truncated", "download the file again")


def test_a_legacy_format_bin_is_read_not_called_truncated(tmp_path):
    state = {"w": torch.arange(6, dtype=torch.float32).view(2, 3)}
    path = tmp_path / "legacy.bin"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert torch.equal(read_tensors(path, mmap=True)["w"], state["w"])


def test_a_legacy_format_bin_cut_anywhere_says_truncated(tmp_path):
    """Even cut inside a GLOBAL opcode, where weights_only sees a half-named global, it is truncation, not a pickle."""
    whole = tmp_path / "whole.bin"
    torch.save({"w": torch.ones(3)}, whole, _use_new_zipfile_serialization=False)
    data = whole.read_bytes()
    cut = tmp_path / "cut.bin"
    for size in range(1, len(data)):
        cut.write_bytes(data[:size])
        with pytest.raises(ModelFileError) as info:
            read_tensors(cut, mmap=True)
        _check(info.value, cut, "legacy-format", "truncated", "download the file again")


@pytest.mark.parametrize(("content", "words"), [
    (b"<!DOCTYPE html><html><body>Sign in</body></html>", ("HTML page", "download")),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n", ("Git LFS pointer", "git lfs pull")),
], ids=["html", "lfs-pointer"])
@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_a_download_that_saved_something_else(tmp_path, content, words, suffix):
    path = tmp_path / f"ip-adapter_sd15{suffix}"
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as info:
        load_image_adapter(path)
    _check(info.value, path, *words)


def test_a_folder_where_a_file_belongs(tmp_path):
    folder = tmp_path / "ip-adapter_sd15.safetensors"
    folder.mkdir()
    with pytest.raises(ModelFileError) as info:
        load_image_adapter(folder)
    _check(info.value, folder, "a folder", "point at the file inside")


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool])
def test_integer_or_bool_adapter_weights_are_refused_by_key(tmp_path, dtype):
    state = tiny_ip_adapter_state("basic")
    state["ip_adapter"]["1.to_k_ip.weight"] = state["ip_adapter"]["1.to_k_ip.weight"].to(dtype)
    path = write_adapter_file(state, tmp_path / "ip-adapter_sd15.safetensors")
    with pytest.raises(ModelFileError) as info:
        load_image_adapter(path)
    _check(info.value, path, "ip_adapter.1.to_k_ip.weight", "floating-point", str(dtype), "download the adapter")


def test_a_projection_tensor_of_the_wrong_shape_is_named_with_both_shapes(tmp_path):
    state = tiny_ip_adapter_state("basic")
    bias = state["image_proj"]["norm.bias"]
    state["image_proj"]["norm.bias"] = bias[:-1].clone()
    path = write_adapter_file(state, tmp_path / "ip-adapter_sd15.safetensors")
    with pytest.raises(ModelFileError) as info:
        load_image_adapter(path)
    _check(info.value, path, "image_proj.norm.bias", f"shape [{bias.shape[0]}]", f"shape [{bias.shape[0] - 1}]")


@pytest.mark.parametrize(("content", "found"), [(b"[1, 2]", "a JSON list"), ('{"a": "\xe9"}'.encode("latin-1"), "not UTF-8")])
def test_json_that_is_not_a_utf8_object(tmp_path, content, found):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as info:
        read_json(path, fix="download config.json again")
    _check(info.value, path, found, "download config.json again")


def _shards(folder: Path) -> Path:
    save_file({"a": torch.zeros(2)}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.zeros(2)}, str(folder / "model-00002-of-00002.safetensors"))
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                                "b": "model-00001-of-00002.safetensors"}}))
    return index


def test_shard_index_faults_are_each_named(tmp_path):
    index = _shards(tmp_path)
    files = read_shard_index(index)
    first = tmp_path / "model-00001-of-00002.safetensors"
    with pytest.raises(ModelFileError) as info:
        check_shard_holds(first, set(read_tensors(first)), files, index)
    _check(info.value, first, "the tensor b", "model.safetensors.index.json places it here", "download the index")
    (first).unlink()
    with pytest.raises(ModelFileError) as info:
        read_shard_index(index)
    _check(info.value, first, "1 missing", "download every shard")
    index.write_text(json.dumps({"metadata": {"total_size": 16}}))
    with pytest.raises(ModelFileError) as info:
        read_shard_index(index)
    _check(info.value, index, "no weight_map", "['metadata']", "download the index")
