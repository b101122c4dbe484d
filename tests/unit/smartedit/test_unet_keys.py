"""diffusers -> LDM UNet keys: a bijection checked against diffusers' own LDM -> diffusers converter, and the
fixture's UNet weights run through diffusers against the reference's stage-5 UNet call."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

from lmm_edit.loaders.ip2p.unet_keys import LDM_PREFIX, diffusers_unet_to_ldm
from lmm_edit.loaders.smartedit import find_bundle, load_unet_ldm
from lmm_edit.loaders.smartedit.files import read_tensors

FP32_TOL = 1e-4  # README: stage-5 fp32 tensors


def _fixture_unet_config(fixture) -> dict:
    config = json.loads((fixture.root / "checkpoints" / "stable-diffusion-v1-5" / "unet" / "config.json").read_text())
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    config["in_channels"] = 8  # the reference widens conv_in to 8 channels before loading unet-15000
    return config


def _assert_round_trip(diffusers_state: dict[str, torch.Tensor], config: dict) -> None:
    ldm = diffusers_unet_to_ldm({"unet." + k: v for k, v in diffusers_state.items()})
    assert len(ldm) == len(diffusers_state) and all(k.startswith(LDM_PREFIX) for k in ldm)
    back = convert_ldm_unet_checkpoint(ldm, config)
    assert set(back) == set(diffusers_state)
    assert all(back[k] is diffusers_state[k] for k in diffusers_state)


def test_fixture_unet_keys_map_one_to_one_onto_ldm_keys(fixture):
    state = read_tensors(find_bundle(fixture.bundle).unet)
    _assert_round_trip({k[len("unet.") :]: v for k, v in state.items()}, _fixture_unet_config(fixture))


@pytest.mark.parametrize(
    "config",
    [
        {  # SD1.5 layout (4 levels, 2 resnets per level), tiny widths
            "block_out_channels": [8, 16, 16, 16], "layers_per_block": 2, "norm_num_groups": 4, "cross_attention_dim": 8,
            "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "attention_head_dim": 2,
        },
        {  # three levels, one resnet per level
            "block_out_channels": [8, 16, 16], "layers_per_block": 1, "norm_num_groups": 4, "cross_attention_dim": 8,
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"], "attention_head_dim": 2,
        },
    ],
)
def test_depth_and_levels_come_from_the_keys(config):
    config = {**config, "in_channels": 8, "out_channels": 4, "sample_size": 8}
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    _assert_round_trip(dict(unet.state_dict()), config)


def test_ldm_state_keeps_the_eight_channel_conv_in(fixture):
    ldm = load_unet_ldm(find_bundle(fixture.bundle))
    assert ldm[LDM_PREFIX + "input_blocks.0.0.weight"].shape[1] == 8


def test_fixture_unet_through_diffusers_reproduces_the_reference_call(fixture, rel_err):
    """Three CFG branches [text+image, image, uncond], v' added after conv_in in all three (fixture README)."""
    s4, s5, inputs = fixture.stage[4], fixture.stage[5], fixture.inputs
    unet = UNet2DConditionModel(**_fixture_unet_config(fixture))
    state = read_tensors(find_bundle(fixture.bundle).unet)
    unet.load_state_dict({k[len("unet.") :]: v for k, v in state.items()}, strict=True)
    residual = s4["modulated_image_features_fp16"].float().repeat(3, 1, 1, 1)
    unet.conv_in.register_forward_hook(lambda _m, _i, out: out + residual)
    latents = s5["scaled_latent_model_input"].repeat(3, 1, 1, 1)
    image = torch.cat([s5["image_latents"], s5["image_latents"], torch.zeros_like(s5["image_latents"])])
    text = torch.cat([s4["final_text_conditioning_fp16"].float(), inputs["uncond_prompt_embeds"], inputs["uncond_prompt_embeds"]])
    with torch.no_grad():
        out = unet(torch.cat([latents, image], dim=1), s5["timestep"], encoder_hidden_states=text).sample
    assert rel_err(out, s5["unet_out"]) < FP32_TOL
