"""diffusers `UNet2DConditionModel` keys -> LDM (`model.diffusion_model.*`) keys, for the SD1.5 layout.

Shared by every InstructPix2Pix-style UNet that arrives in diffusers keys. SmartEdit's `unet-*/adapter_model.bin` holds `unet.<diffusers key>` with an 8-channel conv_in. ComfyUI's
UNETLoader does not detect that diffusers layout, but loads the LDM layout and then detects
InstructPix2Pix from the 8 input channels. The map is the inverse of ComfyUI's `comfy.utils.unet_to_diffusers`
for SD1.5-style UNets (ResNet + Transformer2D blocks, one down/upsampler per level but the last), with the
number of levels, resnets per level and which levels have attention read from the keys.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import ModelFileError

LDM_PREFIX = "model.diffusion_model."
DIFFUSERS_PREFIX = "unet."  # SmartEdit LLMSDTrainer._save filter; pass prefix="" for a plain diffusers UNet
CONV_IN_KEY = LDM_PREFIX + "input_blocks.0.0.weight"
IP2P_IN_CHANNELS = 8  # InstructPix2Pix: 4 noisy-latent + 4 source-image-latent channels into conv_in

RESNET_NAMES = {  # diffusers ResnetBlock2D -> LDM ResBlock
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
TOP_LEVEL = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _resnet(rest: str) -> str:
    name, _, tail = rest.partition(".")
    if name not in RESNET_NAMES:
        raise KeyError(rest)
    return f"{RESNET_NAMES[name]}.{tail}"


def _count(keys: list[str], pattern: str) -> dict[int, int]:
    """For `pattern` with groups (block, item): block -> number of items."""
    found: dict[int, set[int]] = {}
    for key in keys:
        m = re.match(pattern, key)
        if m:
            found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return {b: len(items) for b, items in found.items()}


def diffusers_to_ldm_map(keys: list[str]) -> dict[str, str]:
    """diffusers key (without `unet.`) -> LDM key (without prefix) for every key of a SD1.5-style UNet."""
    down_resnets = _count(keys, r"down_blocks\.(\d+)\.resnets\.(\d+)\.")
    up_resnets = _count(keys, r"up_blocks\.(\d+)\.resnets\.(\d+)\.")
    levels = len(down_resnets)
    has_down = {int(m.group(1)) for k in keys if (m := re.match(r"down_blocks\.(\d+)\.downsamplers\.", k))}
    down_start = {i: 1 + sum(down_resnets[k] + (k in has_down) for k in range(i)) for i in range(levels)}
    up_start = {i: sum(up_resnets[k] for k in range(i)) for i in range(len(up_resnets))}
    up_has_attn = {int(m.group(1)) for k in keys if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
    mapping: dict[str, str] = {}
    for key in keys:
        module, _, param = key.rpartition(".")
        for src, dst in TOP_LEVEL.items():
            if module == src:
                mapping[key] = f"{dst}.{param}"
        if key in mapping:
            continue
        if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            i, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
            index = down_start[i] + j
            mapping[key] = f"input_blocks.{index}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{index}.1.{rest}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            i = int(m.group(1))
            mapping[key] = f"input_blocks.{down_start[i] + down_resnets[i]}.0.op.{m.group(2)}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            mapping[key] = f"middle_block.{2 * int(m.group(1))}.{_resnet(m.group(2))}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.+)", key):
            mapping[key] = f"middle_block.1.{m.group(1)}"
        elif m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            i, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
            index = up_start[i] + j
            mapping[key] = f"output_blocks.{index}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{index}.1.{rest}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            i = int(m.group(1))
            slot = 2 if i in up_has_attn else 1
            mapping[key] = f"output_blocks.{up_start[i] + up_resnets[i] - 1}.{slot}.conv.{m.group(2)}"
        else:
            raise KeyError(f"unexpected diffusers UNet key {key!r} (SD1.5 layout expected)")
    if len(set(mapping.values())) != len(mapping) or levels == 0:
        raise ValueError("diffusers UNet keys do not form a SD1.5-style UNet")
    return mapping


def diffusers_unet_to_ldm(state: dict[str, torch.Tensor], prefix: str = DIFFUSERS_PREFIX) -> dict[str, torch.Tensor]:
    """`unet.<diffusers key>` tensors -> `model.diffusion_model.<LDM key>` tensors (same tensor objects)."""
    stripped = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    mapping = diffusers_to_ldm_map(list(stripped))
    return {LDM_PREFIX + mapping[k]: v for k, v in stripped.items()}


def check_ip2p_conv_in(state: dict[str, torch.Tensor], file: str | Path, fix: str, file_key: str = CONV_IN_KEY) -> None:
    """Refuse an LDM UNet state whose conv_in does not take InstructPix2Pix's 8 channels (latent + source latent).

    Every loader of an InstructPix2Pix-style UNet calls this, so nodes, the command line and batch runs all get it.
    file_key: how the file names conv_in's weight (a diffusers file: `unet.conv_in.weight`).
    """
    weight = state.get(CONV_IN_KEY)
    if weight is None:
        raise ModelFileError(file, f"an InstructPix2Pix UNet with its conv_in weight {file_key}", "no such tensor", fix)
    if weight.dim() != 4 or weight.shape[1] != IP2P_IN_CHANNELS:
        channels = weight.shape[1] if weight.dim() == 4 else "?"
        kind = {4: " (a text-to-image UNet)", 9: " (an inpainting UNet)"}.get(channels, "")
        raise ModelFileError(
            file, f"an InstructPix2Pix UNet: {file_key} of shape [C, {IP2P_IN_CHANNELS}, 3, 3]",
            f"shape {list(weight.shape)}: {channels} input channels{kind}", fix,
        )
