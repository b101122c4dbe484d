"""VLM folders are recognised by config.json model_type; [MM] tokens are added, or read when learned."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from safetensors.torch import save_file

from lmm_edit.loaders.errors import ModelFileError
from lmm_edit.loaders.vlm.families import recognise_vlm_family
from lmm_edit.loaders.vlm.load import load_mllm


def test_families_are_recognised_from_model_type(tiny_llava_folder, tiny_qwen2_vl_folder):
    assert recognise_vlm_family(tiny_llava_folder).name == "llava-1.5"
    assert recognise_vlm_family(tiny_qwen2_vl_folder).name == "qwen2-vl"


def test_unknown_family_names_the_config_the_model_type_and_the_supported_families(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "blip-2"}))
    with pytest.raises(ModelFileError) as caught:
        load_mllm(tmp_path)
    message = str(caught.value)
    assert "config.json" in message and "model_type 'blip-2'" in message
    for family in ("llava-1.5 (llava)", "llava-next", "llava-onevision", "qwen2-vl (qwen2_vl)", "qwen2.5-vl"):
        assert family in message


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="no config.json"):
        load_mllm(tmp_path)


@pytest.mark.parametrize("folder_fixture", ["tiny_llava_folder", "tiny_qwen2_vl_folder"])
def test_untrained_mm_tokens_are_added_with_the_mean_row(request, folder_fixture):
    folder = request.getfixturevalue(folder_fixture)
    plain = transformers.AutoModelForImageTextToText.from_pretrained(folder)
    mean_row = plain.get_input_embeddings().weight.mean(dim=0)

    bundle = load_mllm(folder, num_mm_tokens=8)

    names = bundle.tokenizer.convert_ids_to_tokens(bundle.mm_token_ids)
    assert names == [f"[MM_{k}]" for k in range(8)] and not bundle.mm_tokens_trained
    rows = bundle.model.get_input_embeddings().weight[bundle.mm_token_ids]
    torch.testing.assert_close(rows, mean_row.expand(8, -1), atol=1e-6, rtol=0)


def test_learned_mm_tokens_saved_with_the_model_are_used_as_they_are(tiny_llava_folder, tmp_path):
    bundle = load_mllm(tiny_llava_folder, num_mm_tokens=4)
    learned = torch.randn(4, bundle.model.get_input_embeddings().weight.shape[1])
    with torch.no_grad():
        bundle.model.get_input_embeddings().weight[bundle.mm_token_ids] = learned
    bundle.model.save_pretrained(tmp_path)
    bundle.tokenizer.save_pretrained(tmp_path)
    bundle.image_processor.save_pretrained(tmp_path)

    reloaded = load_mllm(tmp_path, num_mm_tokens=4)

    assert reloaded.mm_tokens_trained
    torch.testing.assert_close(reloaded.model.get_input_embeddings().weight[reloaded.mm_token_ids], learned)
    with pytest.raises(ModelFileError, match=r"found 4 in the tokenizer.*set the number of \[MM\] tokens to 4"):
        load_mllm(tmp_path, num_mm_tokens=8)


def test_mm_embeddings_file_sets_the_rows_and_checks_their_shape(tiny_qwen2_vl_folder, tmp_path):
    width = 64  # the tiny Qwen2-VL's hidden size
    rows = torch.randn(4, width)
    save_file({"input_embeddings": rows}, str(tmp_path / "mm.safetensors"))
    bundle = load_mllm(tiny_qwen2_vl_folder, num_mm_tokens=4, mm_embeddings=tmp_path / "mm.safetensors")
    assert bundle.mm_tokens_trained
    torch.testing.assert_close(bundle.model.get_input_embeddings().weight[bundle.mm_token_ids], rows)

    save_file({"input_embeddings": torch.zeros(3, width)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ModelFileError, match=r"bad\.safetensors: expected input_embeddings of shape \[4, 64\]"):
        load_mllm(tiny_qwen2_vl_folder, num_mm_tokens=4, mm_embeddings=tmp_path / "bad.safetensors")
