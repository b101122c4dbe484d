"""Tiny random InstructPix2Pix models, as a diffusers folder and as an LDM single-file checkpoint.

ComfyUI recognises an 8-channel SD1.5 UNet (model_channels 320, context 768) as
``SD15_instructpix2pix``; its SD1.5 checkpoint loader builds the CLIP-L text encoder and
the SD VAE at their full fixed sizes, so those two keep the real SD1.5 shapes (random
weights) and only the UNet is shrunk: two levels, one res block each, attention on the
first level and in the middle, 8 heads of 40 channels as in SD1.5.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

import torch
from safetensors.torch import save_file

from .clip_tokenizer import write_clip_tokenizer

SD15_SCHEDULER_CONFIG = {  # runwayml/stable-diffusion-v1-5 scheduler, as the timbrooks/instruct-pix2pix folder
    "_class_name": "EulerAncestralDiscreteScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
}

TINY_UNET_CONFIG = dict(
    sample_size=8,
    in_channels=8,
    out_channels=4,
    block_out_channels=(320, 640),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=1,
    cross_attention_dim=768,
    attention_head_dim=8,  # diffusers' name for the number of heads in SD1.5 configs
    norm_num_groups=32,
)

# The same UNet in ComfyUI's (LDM) terms, for the key map.
TINY_UNET_LDM_CONFIG = dict(
    num_res_blocks=[1, 1],
    channel_mult=[1, 2],
    transformer_depth=[1, 0],
    transformer_depth_output=[1, 1, 0, 0],  # popped from the end by comfy.utils.unet_to_diffusers
    transformer_depth_middle=1,
)

SD15_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=256,
    scaling_factor=0.18215,
)

SD15_CLIP_TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
)


@dataclass
class TinyIP2P:
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module


def randomise_(module: torch.nn.Module, generator: torch.Generator, std: float = 0.02) -> None:
    """Seeded weights that keep activations finite through deep random stacks."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=generator) * std)
            elif p.ndim == 1:  # norms
                p.copy_(1.0 + torch.randn(p.shape, generator=generator) * std)
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=generator) / fan_in**0.5)


def build_tiny_ip2p(seed: int = 0) -> TinyIP2P:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    generator = torch.Generator().manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
    vae = AutoencoderKL(**SD15_VAE_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_CLIP_TEXT_CONFIG))
    for module in (unet, vae, text_encoder):
        randomise_(module, generator)
        module.eval()
    return TinyIP2P(unet, vae, text_encoder)


def write_diffusers_folder(models: TinyIP2P, folder: pathlib.Path, tokenizer_source: pathlib.Path | None = None) -> pathlib.Path:
    """A folder StableDiffusionInstructPix2PixPipeline.from_pretrained loads (no safety checker)."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    models.unet.save_pretrained(folder / "unet")
    models.vae.save_pretrained(folder / "vae")
    models.text_encoder.save_pretrained(folder / "text_encoder")
    if tokenizer_source is not None:
        shutil.copytree(tokenizer_source, folder / "tokenizer", dirs_exist_ok=True)
    else:
        write_clip_tokenizer(folder / "tokenizer")
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER_CONFIG))
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionInstructPix2PixPipeline",
        "feature_extractor": [None, None],
        "safety_checker": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "scheduler": ["diffusers", "EulerAncestralDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }))
    return folder


def ldm_state_dict(models: TinyIP2P, unet_key_map: dict[str, str], vae_to_ldm) -> dict[str, torch.Tensor]:
    """The single-file LDM layout: model.diffusion_model.*, first_stage_model.*, cond_stage_model.transformer.*.

    ``unet_key_map`` maps diffusers UNet keys to LDM keys and ``vae_to_ldm`` converts a
    diffusers VAE state dict; the integration tests pass ComfyUI's own converters
    (comfy.utils.unet_to_diffusers, comfy.diffusers_convert.convert_vae_state_dict), so
    the file is what ComfyUI itself would read back, not our interpretation of it.
    """
    unet_sd = models.unet.state_dict()
    unmapped = sorted(set(unet_sd) - set(unet_key_map))
    if unmapped:
        raise KeyError(f"UNet keys without an LDM name: {unmapped[:5]} ({len(unmapped)} in all)")
    out = {f"model.diffusion_model.{unet_key_map[k]}": v.contiguous() for k, v in unet_sd.items()}
    out.update({f"first_stage_model.{k}": v.contiguous() for k, v in vae_to_ldm(models.vae.state_dict()).items()})
    out.update({f"cond_stage_model.transformer.{k}": v.contiguous() for k, v in models.text_encoder.state_dict().items()})
    return out


def write_ldm_checkpoint(models: TinyIP2P, path: pathlib.Path, unet_key_map: dict[str, str], vae_to_ldm) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(ldm_state_dict(models, unet_key_map, vae_to_ldm), str(path))
    return path
