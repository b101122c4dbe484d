"""Adapter files are recognised by keys; wrong ones fail at load time naming file, expected layout and found."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from lmm_edit.loaders.errors import ModelFileError
from lmm_edit.loaders.ip_adapter import (
    INPUT_IMAGE_EMBEDS,
    INPUT_PENULTIMATE,
    IP_ADAPTER,
    IP_ADAPTER_PLUS,
    cross_attention_layers,
    load_image_adapter,
)
from lmm_edit.selfcheck.ip_adapter_files import (
    SD15_LDM_UNET_CONFIG,
    SDXL_LDM_UNET_CONFIG,
    TINY_SD15_LDM_UNET_CONFIG,
    basic_image_proj_section,
    ip_layers_section,
    tiny_iaa_state,
    tiny_ip_adapter_state,
    write_adapter_file,
)


@pytest.mark.parametrize(
    ("variant", "family", "input_kind", "tokens"),
    [("basic", IP_ADAPTER, INPUT_IMAGE_EMBEDS, 4), ("plus", IP_ADAPTER_PLUS, INPUT_PENULTIMATE, 16)],
)
@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_ip_adapter_files_are_recognised_by_keys(tmp_path, variant, family, input_kind, tokens, suffix):
    adapter = load_image_adapter(write_adapter_file(tiny_ip_adapter_state(variant), tmp_path / f"a{suffix}"))

    assert (adapter.family, adapter.input_kind, adapter.num_tokens) == (family, input_kind, tokens)
    layers = cross_attention_layers(TINY_SD15_LDM_UNET_CONFIG)
    assert adapter.layer_channels == tuple(layer.channels for layer in layers)
    adapter.check_unet(cross_attention_layers(TINY_SD15_LDM_UNET_CONFIG), context_dim=32)


def test_fp16_release_files_keep_their_dtype(tmp_path):
    path = write_adapter_file(tiny_ip_adapter_state("basic"), tmp_path / "a.safetensors", dtype=torch.float16)
    adapter = load_image_adapter(path)
    tokens = adapter.image_tokens(torch.randn(2, 24))
    assert adapter.to_k_ip[0].dtype == torch.float16 and tokens.dtype == torch.float16


def test_training_checkpoint_section_name_adapter_modules_is_accepted(tmp_path):
    state = tiny_ip_adapter_state("basic")
    path = tmp_path / "ckpt.bin"
    torch.save({"image_proj": state["image_proj"], "adapter_modules": state["ip_adapter"]}, path)
    assert load_image_adapter(path).family == IP_ADAPTER


def _sdxl_shaped_adapter(tmp_path):
    layers = cross_attention_layers(SDXL_LDM_UNET_CONFIG)
    g = torch.Generator().manual_seed(0)
    # SDXL's 70 layers over a 2048-wide context, channels divided by 160 to keep the file small.
    state = {
        "image_proj": basic_image_proj_section(16, 2048, 4, g),
        "ip_adapter": ip_layers_section([layer.channels // 160 for layer in layers], 2048, g),
    }
    return write_adapter_file(state, tmp_path / "ip-adapter_sdxl.safetensors", dtype=torch.float16)


def test_sdxl_adapter_on_an_sd15_unet_names_file_expected_and_found(tmp_path):
    adapter = load_image_adapter(_sdxl_shaped_adapter(tmp_path))
    with pytest.raises(ModelFileError) as caught:
        adapter.check_unet(cross_attention_layers(SD15_LDM_UNET_CONFIG), context_dim=768)
    message = str(caught.value)
    assert "ip-adapter_sdxl.safetensors" in message
    assert "16 cross-attention layers" in message and "768-wide text context" in message
    assert "file for SDXL UNets: 70 layers" in message and "2048-wide context" in message
    assert "Fix:" in message


def test_random_safetensors_is_not_an_adapter(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.conv_in.weight": torch.zeros(4, 4)}, str(path))
    with pytest.raises(ModelFileError, match=r"model\.safetensors: expected an image adapter with sections "
                       r"image_proj\.\* and ip_adapter.*found other entries: 1 keys: model\.diffusion_model"):
        load_image_adapter(path)


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_truncated_file_is_reported_as_truncated(tmp_path, suffix):
    path = write_adapter_file(tiny_ip_adapter_state("basic"), tmp_path / f"ip-adapter_sd15{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=rf"ip-adapter_sd15\{suffix}: expected a complete .*probably truncated"):
        load_image_adapter(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="nothing at this path"):
        load_image_adapter(tmp_path / "absent.safetensors")


def test_faceid_file_is_refused_by_name(tmp_path):
    state = tiny_ip_adapter_state("basic")
    g = torch.Generator().manual_seed(0)
    state["image_proj"] = {
        "proj.0.weight": torch.randn(64, 32, generator=g), "proj.0.bias": torch.zeros(64),
        "proj.2.weight": torch.randn(128, 64, generator=g), "proj.2.bias": torch.zeros(128),
        "norm.weight": torch.ones(32), "norm.bias": torch.zeros(32),
    }
    with pytest.raises(ModelFileError, match="found an IP-Adapter FaceID file"):
        load_image_adapter(write_adapter_file(state, tmp_path / "faceid.bin"))


def test_layer_weights_that_do_not_take_the_projection_tokens_are_refused(tmp_path):
    state = tiny_ip_adapter_state("basic")
    state["ip_adapter"]["3.to_k_ip.weight"] = torch.zeros(32, 40)
    state["ip_adapter"]["3.to_v_ip.weight"] = torch.zeros(32, 40)
    with pytest.raises(ModelFileError, match=r"32-wide image tokens.*in-features \[32, 40\]"):
        load_image_adapter(write_adapter_file(state, tmp_path / "mixed.safetensors"))


def test_iaa_whose_mapper_does_not_reach_the_projection_is_refused(tmp_path):
    state = tiny_iaa_state(clip_dim=24)
    state["mapper"]["2.weight"] = torch.zeros(20, 40)
    state["mapper"]["2.bias"] = torch.zeros(20)
    with pytest.raises(ModelFileError, match=r"iaa\.safetensors: expected a consistent insightedit-iaa.*mapper ends"):
        load_image_adapter(write_adapter_file(state, tmp_path / "iaa.safetensors"))
