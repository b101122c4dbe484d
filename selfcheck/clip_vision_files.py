"""A CLIP vision file that ComfyUI's CLIPVisionLoader accepts, a few MB on disk.

``comfy.clip_vision.load_clipvision_from_sd`` picks a fixed configuration from the key names
(``vision_model.encoder.layers.22.*`` -> ViT-L/14 at 224 px, ``layers.30.*`` -> ViT-H/14, ...) and
builds the model at that full size, so no smaller CLIP vision model exists for it. ViT-L/14-224
(304 M parameters, ``comfy/clip_vision_config_vitl.json``) is the smallest such layout. The file
keeps it small on disk: it is a ``torch.save`` file (``.bin``) whose matrices are Hankel views of a
short random vector (``W[i, j] = s[i + j]``, saved with their strides, so the storage is
``out + in - 1`` values), which ``torch.load(weights_only=True)`` restores as written. Every row and
column differs, so the network is not degenerate, and it is seeded.
"""

from __future__ import annotations

import math
import pathlib

import torch

# openai/clip-vit-large-patch14 (transformers CLIPVisionConfig), = comfy/clip_vision_config_vitl.json
VIT_L_14_224 = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
    patch_size=14, projection_dim=768, hidden_act="quick_gelu",
)
VIT_L_IMAGE_EMBEDS = 768  # visual_projection output: CLIP_VISION_OUTPUT.image_embeds width
VIT_L_HIDDEN = 1024  # penultimate_hidden_states width


def _strided_random(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A view of a short random storage: stride 1 along dim 0 and the last dim, dense in between."""
    strides = [1] * len(shape)
    for dim in range(len(shape) - 2, 0, -1):
        strides[dim] = strides[dim + 1] * shape[dim + 1]
    length = 1 + sum((size - 1) * stride for size, stride in zip(shape, strides))
    fan_in = math.prod(shape[1:])
    storage = torch.randn(length, generator=generator) / math.sqrt(fan_in)
    return storage.as_strided(shape, strides)


def vit_l_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Keys and shapes of transformers' ``CLIPVisionModelWithProjection`` (ViT-L/14-224), seeded values."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.device("meta"):
        layout = CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_L_14_224)).state_dict()
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, meta in layout.items():
        shape = tuple(meta.shape)
        if len(shape) >= 2:
            state[key] = _strided_random(shape, generator)
        elif key.endswith("layer_norm1.weight") or key.endswith("layer_norm2.weight") or "layrnorm.weight" in key \
                or key.endswith("layernorm.weight"):
            state[key] = 1.0 + 0.02 * torch.randn(shape, generator=generator)
        else:  # biases, class embedding
            state[key] = 0.02 * torch.randn(shape, generator=generator)
    return state


def write_clip_vision_vit_l(path: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Write the ViT-L/14-224 CLIP vision file (``torch.save``; the extension must not be .safetensors)."""
    if path.suffix in (".safetensors", ".sft"):
        raise ValueError("safetensors cannot store strided views; write a .bin (or .pt) file")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(vit_l_state_dict(seed), path)
    return path
