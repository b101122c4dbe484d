"""A VLM folder with incomplete, wrong or unreadable files is refused with the file and the fix; its code never runs."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmm_edit.loaders.errors import ModelFileError
from lmm_edit.loaders.vlm.load import load_mllm

Q_PROJ = "model.language_model.layers.0.self_attn.q_proj.weight"  # the model's key
Q_PROJ_SUFFIX = "layers.0.self_attn.q_proj.weight"  # the file's key differs (save_pretrained's legacy layout)


def _file_key(state) -> str:
    return next(key for key in state if key.endswith(Q_PROJ_SUFFIX) and "vision" not in key)


@pytest.fixture
def llava_copy(tiny_llava_folder, tmp_path):
    folder = tmp_path / "llava"
    shutil.copytree(tiny_llava_folder, folder)
    return folder


def _rewrite_weights(folder, change):
    state = load_file(folder / "model.safetensors")
    change(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def _refusal(folder) -> str:
    with pytest.raises(ModelFileError) as caught:
        load_mllm(folder, num_mm_tokens=4)
    return str(caught.value)


def test_a_missing_weight_is_refused_listing_the_missing_and_unexpected_keys(llava_copy):
    def change(state):
        state["renamed.weight"] = state.pop(_file_key(state))

    _rewrite_weights(llava_copy, change)
    message = _refusal(llava_copy)
    assert str(llava_copy / "model.safetensors") in message
    assert f"1 missing weights ({Q_PROJ})" in message
    assert "1 keys the model does not have (renamed.weight)" in message
    assert "Fix: the download is incomplete" in message and "download the folder again" in message


def test_unexpected_keys_alone_load_every_weight_of_the_model(llava_copy, tiny_llava_folder):
    _rewrite_weights(llava_copy, lambda state: state.update({"extra.weight": torch.zeros(2)}))
    bundle = load_mllm(llava_copy, num_mm_tokens=4)
    state = load_file(tiny_llava_folder / "model.safetensors")
    reference = state[_file_key(state)]
    torch.testing.assert_close(bundle.model.state_dict()[Q_PROJ], reference, rtol=0, atol=0)


def test_tied_weights_are_not_missing(tiny_qwen2_vl_folder, tmp_path):
    folder = tmp_path / "qwen"
    shutil.copytree(tiny_qwen2_vl_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config["tie_word_embeddings"] = config["text_config"]["tie_word_embeddings"] = True
    (folder / "config.json").write_text(json.dumps(config))
    _rewrite_weights(folder, lambda state: state.pop("lm_head.weight"))
    bundle = load_mllm(folder, num_mm_tokens=4)
    assert bundle.model.get_output_embeddings().weight is bundle.model.get_input_embeddings().weight


def test_a_weight_of_the_wrong_shape_is_named_with_both_shapes(llava_copy):
    _rewrite_weights(llava_copy, lambda state: state.update({_file_key(state): torch.zeros(3, 3)}))
    message = _refusal(llava_copy)
    assert f"1 weights of the wrong shape ({Q_PROJ} (3, 3) instead of (48, 48))" in message
    assert str(llava_copy / "model.safetensors") in message and "Fix:" in message


def test_an_integer_weight_is_refused_instead_of_cast(llava_copy):
    def change(state):
        key = _file_key(state)
        state[key] = torch.ones_like(state[key], dtype=torch.int32)

    _rewrite_weights(llava_copy, change)
    message = _refusal(llava_copy)
    assert str(llava_copy / "model.safetensors") in message and "expected floating-point weights" in message
    assert f"1 integer or bool tensors (language_model.model.{Q_PROJ_SUFFIX} (I32))" in message and "Fix:" in message


def test_a_config_transformers_refuses_is_named_with_its_reason(llava_copy):
    config = json.loads((llava_copy / "config.json").read_text())
    config["text_config"]["num_attention_heads"] = 5  # 48 wide
    (llava_copy / "config.json").write_text(json.dumps(config))
    message = _refusal(llava_copy)
    assert message.startswith(f"{llava_copy}: expected config.json and ")
    assert "hidden size (48) is not a multiple of the number of attention heads (5)" in message
    assert "Fix: use the config.json that came with these weights" in message


def test_a_truncated_weight_file_is_named(llava_copy):
    weights = llava_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    message = _refusal(llava_copy)
    assert str(weights) in message and "probably truncated" in message and "download the file again" in message


def test_a_shard_listed_in_the_index_but_absent_is_named(llava_copy):
    index = {"metadata": {}, "weight_map": {Q_PROJ: "model-00001-of-00002.safetensors",
                                            "lm_head.weight": "model-00002-of-00002.safetensors"}}
    (llava_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    message = _refusal(llava_copy)
    assert "model.safetensors.index.json" in message
    assert "model-00001-of-00002.safetensors, model-00002-of-00002.safetensors missing" in message


def test_a_pickle_that_would_run_code_is_refused_naming_the_file_and_the_global(llava_copy, tmp_path):
    marker = tmp_path / "pickle-ran"

    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (llava_copy / "model.safetensors").unlink()
    torch.save({"weight": RunsCode()}, llava_copy / "pytorch_model.bin")
    message = _refusal(llava_copy)
    assert str(llava_copy / "pytorch_model.bin") in message
    assert "GLOBAL posix.system" in message and "\x1b[" not in message
    assert "use the model.safetensors files" in message
    assert not marker.exists()


def test_a_folder_without_weights_says_which_files_it_needs(llava_copy):
    (llava_copy / "model.safetensors").unlink()
    message = _refusal(llava_copy)
    assert f"{llava_copy}: expected the model weights: model.safetensors" in message and "found no weight file" in message


@pytest.mark.parametrize(("removed", "named"), [
    (("tokenizer.json",), "tokenizer (tokenizer.json or tokenizer.model)"),
    (("preprocessor_config.json",), "image processor (preprocessor_config.json)"),
])
def test_missing_tokenizer_or_image_processor_files_are_named(llava_copy, removed, named):
    for name in removed:
        (llava_copy / name).unlink()
    message = _refusal(llava_copy)
    assert f"{llava_copy}: expected the {named}; found no such file" in message and "Fix: copy" in message


def test_an_unreadable_tokenizer_file_is_named(llava_copy):
    (llava_copy / "tokenizer.json").write_text("{not json")
    message = _refusal(llava_copy)
    assert "tokenizer.json" in message and "JSONDecodeError" in message and "Fix: copy tokenizer.json" in message


def test_an_image_processor_config_that_is_not_an_object_is_named(llava_copy):
    (llava_copy / "preprocessor_config.json").write_text("[1, 2]")
    message = _refusal(llava_copy)
    assert f"{llava_copy}: expected the image processor files preprocessor_config.json" in message
    assert "Fix: copy preprocessor_config.json" in message


AUTO_MAP = {
    "AutoConfig": "custom_code.Config", "AutoModel": "custom_code.Model",
    "AutoModelForImageTextToText": "custom_code.Model", "AutoImageProcessor": "custom_code.Processor",
    "AutoTokenizer": ["custom_code.Tokenizer", "custom_code.Tokenizer"],
}


def test_auto_map_code_in_the_folder_never_runs(llava_copy, tmp_path):
    marker = tmp_path / "custom-code-ran"
    (llava_copy / "custom_code.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nraise SystemExit('custom code ran')\n"
    )
    for name in ("config.json", "tokenizer_config.json", "preprocessor_config.json"):
        config = json.loads((llava_copy / name).read_text())
        config["auto_map"] = AUTO_MAP
        (llava_copy / name).write_text(json.dumps(config))
    bundle = load_mllm(llava_copy, num_mm_tokens=4)  # the family's own transformers classes
    assert type(bundle.model).__name__ == "LlavaForConditionalGeneration"
    assert type(bundle.tokenizer).__module__.startswith("transformers.")
    assert type(bundle.image_processor).__module__.startswith("transformers.")
    assert not marker.exists()


def test_a_tokenizer_class_only_the_folder_defines_is_refused_without_running_it(llava_copy, tmp_path):
    marker = tmp_path / "custom-tokenizer-ran"
    (llava_copy / "custom_code.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    config = json.loads((llava_copy / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "CustomTokenizer"
    config["auto_map"] = {"AutoTokenizer": ["custom_code.CustomTokenizer", "custom_code.CustomTokenizer"]}
    (llava_copy / "tokenizer_config.json").write_text(json.dumps(config))
    try:
        load_mllm(llava_copy, num_mm_tokens=4)
    except ModelFileError as refused:
        assert str(llava_copy) in str(refused) and "Fix:" in str(refused)
    assert not marker.exists()
