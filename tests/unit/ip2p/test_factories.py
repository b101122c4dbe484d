"""The tiny-model factories write files the real readers accept."""

from __future__ import annotations

import json

from lmm_edit.selfcheck.ip2p_models import SD15_CLIP_TEXT_CONFIG, TINY_UNET_CONFIG


def test_diffusers_folder_loads_with_the_instructpix2pix_pipeline(tiny_ip2p_pipeline):
    pipe, _ = tiny_ip2p_pipeline
    assert type(pipe).__name__ == "StableDiffusionInstructPix2PixPipeline"
    assert pipe.unet.config.in_channels == 8  # what diffusers and ComfyUI require of an IP2P UNet


def test_unet_has_the_sizes_comfyui_detects_as_sd15_instructpix2pix(tiny_ip2p_folder):
    config = json.loads((tiny_ip2p_folder / "unet" / "config.json").read_text())
    # comfy/supported_models.py SD15_instructpix2pix.unet_config
    assert config["block_out_channels"][0] == 320
    assert config["cross_attention_dim"] == 768
    assert config["in_channels"] == 8
    assert config["use_linear_projection"] is False
    assert config["block_out_channels"] == list(TINY_UNET_CONFIG["block_out_channels"])


def test_text_encoder_keeps_the_sd15_clip_size(tiny_ip2p_folder):
    config = json.loads((tiny_ip2p_folder / "text_encoder" / "config.json").read_text())
    assert {k: config[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")} == {
        k: SD15_CLIP_TEXT_CONFIG[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")}
