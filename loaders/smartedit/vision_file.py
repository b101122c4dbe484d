"""The CLIP vision tower of SmartEdit's LMM, read from a transformers-layout CLIP file (openai/clip-vit-large-patch14
or ComfyUI's clip_vision ViT-L/14), with the checks every entry point gets: layout, heads, 224 px, every tensor."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ModelFileError
from ..operations import DEFAULT_OPERATIONS
from ..state_checks import load_checked, reading_shapes
from ..weight_files import read_json, read_shapes
from .files import read_tensors
from .vision import ClipVisionConfig, ClipVisionTower, clip_state_to_tower

CLIP_PREFIX = "vision_model."
CLIP_IMAGE_SIZE = 224  # LLaVA-1.1 / SmartEdit: openai/clip-vit-large-patch14, 224 px (16 x 16 patches)
CLIP_FIX = "use openai/clip-vit-large-patch14 (model.safetensors + config.json, or ComfyUI's clip_vision ViT-L/14 file)"


def load_vision(clip_path: Path, select_layer: int, dtype: torch.dtype, operations=DEFAULT_OPERATIONS) -> ClipVisionTower:
    file = clip_path
    config_json = None
    if clip_path.is_dir():
        file = next((clip_path / n for n in ("model.safetensors", "pytorch_model.bin") if (clip_path / n).is_file()), clip_path / "model.safetensors")
    if (file.parent / "config.json").is_file():
        config_json = read_json(file.parent / "config.json")
    shapes = read_shapes(file)
    # openai/clip-vit-large-patch14 and ComfyUI clip_vision files: `vision_model.*`; a CLIPVisionModel saved by
    # transformers 5: the same keys without the prefix
    prefix = CLIP_PREFIX if CLIP_PREFIX + "embeddings.patch_embedding.weight" in shapes else ""
    if prefix + "embeddings.patch_embedding.weight" not in shapes:
        raise ModelFileError(
            file, "a CLIP vision model in transformers layout (keys vision_model.*), e.g. openai/clip-vit-large-patch14",
            f"{len(shapes)} tensors without vision_model.embeddings.patch_embedding.weight",
            "use openai/clip-vit-large-patch14 (model.safetensors, or ComfyUI's clip_vision ViT-L/14 file)",
        )
    with reading_shapes(file, "a CLIP vision model (vision_model.encoder.layers.*)", CLIP_FIX, lambda k: k):
        config = ClipVisionConfig.from_shapes(shapes, prefix, config_json)
    if config.heads <= 0 or config.hidden % config.heads:
        raise ModelFileError(
            file.parent / "config.json" if config_json is not None else file,
            f"num_attention_heads dividing the vision width {config.hidden}", f"{config.heads} heads",
            "use the config.json that came with these CLIP weights (ViT-L/14: 1024 wide, 16 heads)",
        )
    check_tower_size(config, file)
    with torch.device("meta"):
        tower = ClipVisionTower(config, select_layer, operations=operations)
    state = clip_state_to_tower(read_tensors(file, lambda k: k.startswith(prefix), dtype), prefix, tower)
    return load_checked(tower, state, file, "the CLIP vision tower", CLIP_FIX, lambda k: _clip_key(prefix, k))


def _clip_key(prefix: str, key: str) -> str:
    """ClipVisionTower key -> the file's key."""
    if key.startswith("layers."):
        return f"{prefix}encoder.{key}"
    return prefix + (key if key.startswith("pre_layrnorm.") else f"embeddings.{key}")


def check_vision_size(lmm, clip_path: str | Path) -> None:
    """SmartEdit's LLaVA-1.1 was trained on 224 px CLIP features (256 patches); refuse another tower.

    ``load_lmm`` runs this check itself; kept for callers holding an LMM built another way."""
    check_tower_size(lmm.vision.config, clip_path)


def check_tower_size(config: ClipVisionConfig, clip_path: str | Path) -> None:
    """The 224 px check on a tower's config, before any weight is read."""
    size = config.image_size
    if size != CLIP_IMAGE_SIZE:
        raise ModelFileError(
            clip_path, f"CLIP ViT-L/14 for {CLIP_IMAGE_SIZE} px images (openai/clip-vit-large-patch14)",
            f"a vision tower for {size} px images", "pick the 224 px ViT-L/14 (the 336 px one belongs to LLaVA-1.5)",
        )
