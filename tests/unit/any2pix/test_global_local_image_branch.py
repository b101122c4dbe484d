"""The SDXL `ip_adapter_global_local_2_view` through the pack's adapter loader and image-branch token code:
recognised by its keys, its layers matched to the fixture's UNet (LDM config derived from the diffusers config),
and the image tokens made from an embedding equal to the reference's (stage 5 of the fixture)."""

from __future__ import annotations

import pytest
import torch

from lmm_edit.loaders.errors import ModelFileError
from lmm_edit.loaders.ip_adapter import (
    ANY2PIX_GLOBAL_LOCAL,
    INPUT_EMBEDDING,
    cross_attention_layers,
    load_image_adapter,
)
from lmm_edit.loaders.ip_adapter.image_tokens import conditional_tokens, unconditional_tokens
from lmm_edit.selfcheck.ip_adapter_files import SDXL_LDM_UNET_CONFIG
from lmm_edit.selfcheck.sdxl_models import ldm_unet_config

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json, the keys ldm_unet_config reads
SDXL_BASE_UNET = dict(
    block_out_channels=[320, 640, 1280], layers_per_block=2, transformer_layers_per_block=[1, 2, 10],
    attention_head_dim=[5, 10, 20], num_attention_heads=None, cross_attention_dim=2048,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], mid_block_type="UNetMidBlock2DCrossAttn",
    addition_embed_type="text_time", projection_class_embeddings_input_dim=2816, in_channels=4, out_channels=4,
    use_linear_projection=True,
)


@pytest.fixture(scope="module", params=[0, 1], ids=["bin", "safetensors"])
def adapter(fx, request):
    return load_image_adapter(fx.adapter_files[request.param])


def test_the_adapter_is_recognised_by_its_keys_and_fits_the_fixture_unet(fx, adapter):
    config = ldm_unet_config(fx.unet_config)
    layers = cross_attention_layers(config)
    assert (adapter.family, adapter.input_kind) == (ANY2PIX_GLOBAL_LOCAL, INPUT_EMBEDDING)
    assert adapter.num_tokens == int(fx.stage[5]["ipproj_cond_out"].shape[1])
    assert adapter.layer_channels == tuple(layer.channels for layer in layers)
    adapter.check_unet(layers, fx.unet_config["cross_attention_dim"])
    with pytest.raises(ModelFileError, match="SDXL|cross-attention layers"):
        adapter.check_unet(cross_attention_layers(SDXL_LDM_UNET_CONFIG), 2048)


def test_ldm_config_of_the_real_sdxl_unet_is_comfyuis_sdxl():
    config = ldm_unet_config(SDXL_BASE_UNET)
    assert {k: config[k] for k in SDXL_LDM_UNET_CONFIG} == SDXL_LDM_UNET_CONFIG
    assert (config["num_head_channels"], config["adm_in_channels"], config["use_linear_in_transformer"]) == (64, 2816, True)
    assert len(cross_attention_layers(config)) == 70


def test_tokens_from_the_fused_embedding_equal_the_reference(fx, adapter, check, tol):
    s5 = fx.stage[5]
    fused = fx.stage[4]["fusion_latent"].reshape(1, -1)
    check("IP tokens from the fused embedding [1, C]", conditional_tokens(adapter, fused), s5["ipproj_cond_out"],
          tol.formula, tol.formula)
    check("IP tokens from the two views [1, 2, C]", conditional_tokens(adapter, s5["ipproj_cond_in"]),
          s5["ipproj_cond_out"], tol.formula, tol.formula)
    check("unconditional IP tokens", unconditional_tokens(adapter, 1), s5["ipproj_uncond_out"], tol.formula, tol.formula)
    two = conditional_tokens(adapter, torch.cat([fused, torch.zeros_like(fused)]))  # two prompts: tokens concatenated
    assert two.shape == (1, 2 * adapter.num_tokens, adapter.context_dim)
    assert unconditional_tokens(adapter, 2).shape == two.shape


def test_an_embedding_of_another_width_is_refused_with_the_fix(adapter):
    with pytest.raises(ValueError, match=r"reads an embedding \[images, 32\].*found a tensor of shape \(1, 24\)"):
        conditional_tokens(adapter, torch.zeros(1, 24))
    with pytest.raises(ValueError, match="two views"):
        conditional_tokens(adapter, torch.zeros(1, 3, 32))
