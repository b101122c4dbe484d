"""Every bad input named in issue 9 gives a ModelFileError naming the file, the expectation and the fix."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lmm_edit.loaders.errors import ModelFileError
from lmm_edit.loaders.smartedit import find_bundle, load_smartedit
from lmm_edit.loaders.smartedit.files import read_tensors
from lmm_edit.selfcheck.smartedit_release import TinySizes, train_tokenizer


def _load(r, **kwargs):
    return load_smartedit(r.bundle, r.llava, r.clip, qformer_heads=r.qformer_heads, **kwargs)


def _assert_error(err: ModelFileError, file_part: str, *words: str) -> None:
    assert file_part in err.file
    text = str(err).lower()
    assert err.expected and err.found and err.fix
    for word in words:
        assert word.lower() in text, (word, str(err))


def test_llava_15_instead_of_11(release):
    config = json.loads((release.llava / "config.json").read_text())
    config.update(mm_projector_type="mlp2x_gelu", mm_vision_tower="openai/clip-vit-large-patch14-336")
    (release.llava / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError) as info:
        _load(release)
    _assert_error(info.value, release.llava.name, "LLaVA-1.5", "LLaVA-1.1", "apply_delta")


def test_llava_base_without_its_three_extra_rows(release):
    """A plain Vicuna / LLaMA (or a LLaVA-1.5 with 32000 rows) where LLaVA-1.1 is expected."""
    for shard, key in (("pytorch_model-00001-of-00002.bin", "model.embed_tokens.weight"), ("pytorch_model-00002-of-00002.bin", "lm_head.weight")):
        state = torch.load(release.llava / shard, weights_only=True)
        state[key] = state[key][: release.sizes.base_vocab].clone()
        torch.save(state, release.llava / shard)
    with pytest.raises(ModelFileError) as info:
        _load(release)
    _assert_error(info.value, "pytorch_model-00001", "LLaVA-1.1", f"{release.sizes.base_vocab} rows")


def test_missing_adapter_config(release):
    (release.bundle / "adapter_config.json").unlink()
    with pytest.raises(ModelFileError) as info:
        find_bundle(release.bundle)
    _assert_error(info.value, "adapter_config.json", "LoRA", "data/adapter_config.json")


@pytest.mark.parametrize("file_format", ["bin", "safetensors"])
def test_missing_img_rows(release, file_format):
    bundle = find_bundle(release.bundle, file_format=file_format)
    state = read_tensors(bundle.llm)
    key = "model.base_model.model.embed_tokens.weight"
    state[key] = state[key][: release.sizes.base_vocab + 3].clone()
    if file_format == "bin":
        torch.save(state, bundle.llm)
    else:
        from safetensors.torch import save_file

        save_file(state, str(bundle.llm))
    with pytest.raises(ModelFileError) as info:
        _load(release, file_format=file_format)
    _assert_error(info.value, bundle.llm.name, "<img_k> rows are missing", "<img_0>")


@pytest.mark.parametrize("file_format", ["bin", "safetensors"])
def test_truncated_file(release, file_format):
    bundle = find_bundle(release.bundle, file_format=file_format)
    data = bundle.bim.read_bytes()
    bundle.bim.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError) as info:
        _load(release, file_format=file_format)
    _assert_error(info.value, bundle.bim.name, "truncated", "again")


def test_tokenizer_of_the_wrong_size(release, tmp_path):
    wrong = tmp_path / "tokenizer.model"
    wrong.write_bytes(train_tokenizer(TinySizes().base_vocab - 40))
    with pytest.raises(ModelFileError) as info:
        _load(release, tokenizer_path=wrong)
    _assert_error(info.value, "tokenizer.model", f"{release.sizes.base_vocab} pieces", f"{release.sizes.base_vocab - 40} pieces")


def test_folder_that_is_not_a_smartedit_bundle(release, tmp_path):
    other = tmp_path / "some_checkpoint"
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelFileError) as info:
        find_bundle(other)
    _assert_error(info.value, "some_checkpoint", "LLM-<step>", "model.safetensors")


def test_bundle_with_a_component_missing(release):
    shutil.rmtree(release.bundle / f"modulate-{release.sizes.step}")
    with pytest.raises(ModelFileError) as info:
        find_bundle(release.bundle)
    _assert_error(info.value, release.bundle.name, f"modulate-{release.sizes.step}")
