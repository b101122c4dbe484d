"""Loading the release layouts (single file, shards, SentencePiece-only tokenizer, both adapter forms) and the
messages for wrong ones; the modules also run in half precision."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmm_edit.loaders.any2pix import Any2PixTokenizer, load_global_local_adapter, load_llm, load_prior, vicuna_v1_prompt
from lmm_edit.loaders.errors import ModelFileError


@pytest.fixture()
def llm_copy(fx, tmp_path):
    folder = tmp_path / "llm-retrained"
    shutil.copytree(fx.llm_dir, folder)
    return folder


def _same_state(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_bin_and_safetensors_weights_load_the_same_llm(llm, llm_copy):
    (llm_copy / "model.safetensors").unlink()  # leaves pytorch_model.bin
    model, _ = load_llm(llm_copy)
    assert _same_state(model, llm[0])


def test_sharded_safetensors_load_the_same_llm(llm, llm_copy):
    state = load_file(llm_copy / "model.safetensors")
    keys = sorted(state)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    for name, part in shards.items():
        save_file({k: state[k] for k in part}, llm_copy / name)
    (llm_copy / "model.safetensors").unlink()
    (llm_copy / "pytorch_model.bin").unlink()
    index = {"metadata": {}, "weight_map": {k: n for n, part in shards.items() for k in part}}
    (llm_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    model, _ = load_llm(llm_copy)
    assert _same_state(model, llm[0])
    (llm_copy / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelFileError, match="missing: model-00002-of-00002.safetensors"):
        load_llm(llm_copy)


def test_sentencepiece_only_tokenizer_matches_the_fast_one(fx, llm, tmp_path):
    _, fast = llm
    folder = tmp_path / "tokenizer"
    shutil.copytree(fx.llm_dir / "tokenizer", folder)
    (folder / "tokenizer.json").unlink()
    slow = Any2PixTokenizer(folder)
    assert slow.ids == fast.ids
    assert slow.encode(vicuna_v1_prompt(fx.instruction(fast))) == fx.prompt_ids
    assert slow.decode(fx.prompt_ids + fx.forced_ids) == fx.run_info["decoded"]


def test_a_plain_llama_folder_is_refused(llm_copy):
    config = json.loads((llm_copy / "config.json").read_text())
    config["model_type"] = "llama"
    (llm_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="model_type 'instructany2pix'"):
        load_llm(llm_copy)


def test_missing_weights_are_named(llm_copy):
    (llm_copy / "model.safetensors").unlink()
    (llm_copy / "pytorch_model.bin").unlink()
    with pytest.raises(ModelFileError, match="model.safetensors, pytorch_model.bin or a sharded index"):
        load_llm(llm_copy)


def test_a_tokenizer_without_the_any2pix_tokens_is_refused(llm_copy):
    tokenizer = llm_copy / "tokenizer"
    data = json.loads((tokenizer / "tokenizer.json").read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<base>"]
    (tokenizer / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="without <base>"):
        load_llm(llm_copy)


def test_a_prior_file_without_its_clip_text_model_is_refused(fx, tmp_path):
    state = load_file(fx.prior_files[1])
    bad = tmp_path / "model.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith("cond_stage_models.")}, bad)
    with pytest.raises(ModelFileError, match="cond_stage_models.0.model"):
        load_prior(bad)


def test_a_plain_ip_adapter_is_refused(fx, tmp_path):
    state = load_file(fx.adapter_files[1])
    bad = tmp_path / "ip-adapter_sdxl.safetensors"
    save_file({k: v for k, v in state.items() if k != "image_proj.raw_embed"}, bad)
    with pytest.raises(ModelFileError, match="no raw_embed"):
        load_global_local_adapter(bad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_llm_and_prior_run_in_half_precision(fx, dtype, forced_run, settings, check):
    from lmm_edit.loaders.any2pix import encode_instruction, refine

    model, tokenizer = load_llm(fx.llm_dir, dtype=dtype)
    run = encode_instruction(model, tokenizer, fx.instruction(tokenizer), fx.aux.to(dtype), fx.input_kinds(),
                             settings, forced=fx.forced_ids)
    assert run.image_embeds.dtype == dtype
    check(f"image_embeds {dtype}", run.image_embeds, fx.stage[2]["llm_image_embeds"], 0.0, 5e-2)
    bundle = load_prior(fx.prior_files[0], fx.gpt2_config, fx.clip_dir / "config.json", fx.clip_dir, dtype=dtype)
    text = bundle.prior.text_states(torch.tensor([bundle.empty_text_ids]))
    y = refine(bundle.prior, fx.stage[1]["prior_src"].to(dtype), text, mode="direct").y
    assert y.dtype == dtype
    check(f"prior y {dtype}", y, fx.stage[1]["prior_y"], 0.0, 1e-1)
