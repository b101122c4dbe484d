"""CLIP ViT vision tower as LLaVA-1.1 uses it: `hidden_states[mm_vision_select_layer][:, 1:]`.

LLaVA's `CLIPVisionTower` runs transformers' `CLIPVisionModel` with `output_hidden_states=True` and keeps
the penultimate layer (select layer -2) without the CLS token. Written in plain torch (pre-LN ViT,
quick-GELU as OpenAI CLIP) so that the layers after the selected one are never run. Keys are those of
transformers' `CLIPVisionModel` / `CLIPModel` (`vision_model.*`), the format of openai/clip-vit-large-patch14
and of ComfyUI's `clip_vision` folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..operations import DEFAULT_OPERATIONS
from ..pixels import first_rgb, resize_bicubic

# OpenAI CLIP image normalisation (openai/clip-vit-large-patch14 preprocessor_config.json)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_HEAD_DIM = 64  # ViT-L/14: 1024 wide, 16 heads; used when no config.json gives the head count


@dataclass(frozen=True)
class ClipVisionConfig:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    patch: int
    image_size: int
    eps: float = 1e-5  # CLIPVisionConfig.layer_norm_eps
    act: str = "quick_gelu"  # OpenAI CLIP

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, ...]], prefix: str = "", config_json: dict | None = None) -> ClipVisionConfig:
        """Widths and depth from the tensors; the head count from config.json when given, else width / 64."""
        hidden, _, patch, _ = shapes[prefix + "embeddings.patch_embedding.weight"]
        positions = shapes[prefix + "embeddings.position_embedding.weight"][0]
        grid = math.isqrt(positions - 1)
        layers = 1 + max(int(k[len(prefix + "encoder.layers.") :].split(".")[0]) for k in shapes if k.startswith(prefix + "encoder.layers."))
        intermediate = shapes[prefix + "encoder.layers.0.mlp.fc1.weight"][0]
        cfg = config_json or {}
        cfg = cfg.get("vision_config", cfg)
        heads = int(cfg.get("num_attention_heads", hidden // CLIP_HEAD_DIM))
        return cls(
            hidden=hidden, layers=layers, heads=heads, intermediate=intermediate, patch=patch, image_size=grid * patch,
            eps=float(cfg.get("layer_norm_eps", 1e-5)), act=str(cfg.get("hidden_act", "quick_gelu")),
        )

    @property
    def grid(self) -> int:
        return self.image_size // self.patch


def _act(name: str):
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name == "gelu":
        return F.gelu
    raise ValueError(f"unsupported CLIP activation {name!r}")


class ClipAttention(nn.Module):
    def __init__(self, config: ClipVisionConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.heads = config.heads
        self.q_proj = operations.Linear(config.hidden, config.hidden)
        self.k_proj = operations.Linear(config.hidden, config.hidden)
        self.v_proj = operations.Linear(config.hidden, config.hidden)
        self.out_proj = operations.Linear(config.hidden, config.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (p(x).view(b, t, self.heads, d // self.heads).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class ClipMLP(nn.Module):
    def __init__(self, config: ClipVisionConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.fc1 = operations.Linear(config.hidden, config.intermediate)
        self.fc2 = operations.Linear(config.intermediate, config.hidden)
        self.act = _act(config.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ClipLayer(nn.Module):
    def __init__(self, config: ClipVisionConfig, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.layer_norm1 = operations.LayerNorm(config.hidden, eps=config.eps)
        self.self_attn = ClipAttention(config, operations=operations)
        self.layer_norm2 = operations.LayerNorm(config.hidden, eps=config.eps)
        self.mlp = ClipMLP(config, operations=operations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class ClipVisionTower(nn.Module):
    """Pixels [B, 3, S, S] -> patch features [B, (S/p)^2, D] of hidden_states[select_layer] without CLS.

    hidden_states[0] is the embedding after `pre_layrnorm`, hidden_states[k] the output of layer k-1, so
    select_layer -2 runs layers 0 .. L-2 only. Keys below `vision_model.`; `post_layernorm` is unused.
    """

    def __init__(self, config: ClipVisionConfig, select_layer: int = -2, operations=DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.config = config
        self.class_embedding = nn.Parameter(torch.zeros(config.hidden))
        self.patch_embedding = operations.Conv2d(3, config.hidden, config.patch, stride=config.patch, bias=False)
        self.position_embedding = operations.Embedding(config.grid * config.grid + 1, config.hidden)
        self.pre_layrnorm = operations.LayerNorm(config.hidden, eps=config.eps)
        run = (config.layers + 1 + select_layer) if select_layer < 0 else select_layer
        if not 0 <= run <= config.layers:
            raise ValueError(f"select_layer {select_layer} outside the {config.layers} layers")
        self.layers = nn.ModuleList(ClipLayer(config, operations=operations) for _ in range(run))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        b = pixels.shape[0]
        # compute dtype: the norms' (Linear/Conv weights may be stored narrower and cast per layer, loaders/storage.py);
        # raw weights are read on the pixels' device (partial loading may leave them offloaded)
        dtype = self.pre_layrnorm.weight.dtype
        patches = self.patch_embedding(pixels.to(dtype)).flatten(2).transpose(1, 2)  # [B, P, D]
        cls = self.class_embedding.to(patches).expand(b, 1, -1)
        x = torch.cat([cls, patches], dim=1) + self.position_embedding.weight.to(patches)[None]
        x = self.pre_layrnorm(x)
        for layer in self.layers:
            x = layer(x)
        return x[:, 1:]



def clip_state_to_tower(state: dict[str, torch.Tensor], prefix: str, tower: ClipVisionTower) -> dict[str, torch.Tensor]:
    """Map `vision_model.*` keys onto ClipVisionTower keys (layers past the selected one are dropped)."""
    out = {}
    kept_layers = len(tower.layers)
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if name.startswith("embeddings."):
            name = name[len("embeddings.") :]
            if name == "position_ids":
                continue
        elif name.startswith("encoder.layers."):
            index = int(name.split(".")[2])
            if index >= kept_layers:
                continue
            name = name[len("encoder.") :]
        elif not name.startswith("pre_layrnorm."):
            continue  # post_layernorm, projections, a CLIPModel's text tower: unused
        out[name] = value
    return out


CLIP_INPUT = "SmartEdit LMM (CLIP image input)"  # how errors name this input


def clip_pixels(image: torch.Tensor, size: int) -> torch.Tensor:
    """ComfyUI IMAGE [H, W, C] or [B, H, W, C] (first image) float in 0..1 -> CLIP pixels [1, 3, size, size] fp32.

    As the reference (test/DS_SmartEdit_test.py): PIL `.resize((224, 224), BICUBIC)` of the 8-bit RGB
    image (aspect ratio not kept), then CLIPImageProcessor, whose resize and centre crop are no-ops at
    that size: rescale 1/255 and normalise with the OpenAI mean/std. Gray and RGBA become RGB, any size down
    to 1x1 is resized (never cropped); an empty or non-finite image is refused (``pixels.first_rgb``).
    """
    pixels = resize_bicubic(first_rgb(image, CLIP_INPUT)[0], size, size)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32)
    std = torch.tensor(CLIP_STD, dtype=torch.float32)
    return ((pixels - mean) / std).permute(2, 0, 1).unsqueeze(0).contiguous()
