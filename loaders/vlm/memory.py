"""Working memory of one VLM encode beyond the weights, for ComfyUI's model management.

What ``load_models_gpu`` must keep free besides the weights it loads (nodes/module_patchers.py): the KV cache of
the prompt (image placeholders + text) and a full-length answer, the prefill's largest activations (the MLP's
intermediates and one layer's attention scores, as transformers' eager attention holds them), and headroom
for the vision tower and the allocator. Sizes come from the model's config.
"""

from __future__ import annotations

from ..encoder import MAX_NEW_TOKENS

TEXT_POSITIONS = 512  # the template, the instruction and the [MM] run, with room to spare
ANYRES_CROPS = 5  # LLaVA-NeXT: the base image and up to 4 tiles (image_grid_pinpoints of 2x2)
QWEN_IMAGE_POSITIONS = 2048  # Qwen2-VL: one token per 28 x 28 pixels after merging, i.e. up to a 1.6 MP image
HEADROOM = 512 * 1024 * 1024  # vision tower activations, logits and the allocator's fragmentation


def image_positions(config) -> int:
    """Upper bound of the placeholder tokens one image gets in the prompt."""
    vision = getattr(config, "vision_config", None)
    size, patch = getattr(vision, "image_size", None), getattr(vision, "patch_size", None)
    if not isinstance(size, int) or not isinstance(patch, int) or getattr(vision, "spatial_merge_size", None):
        return QWEN_IMAGE_POSITIONS  # dynamic resolution (Qwen2-VL, Qwen2.5-VL)
    per_crop = (size // patch) ** 2
    return per_crop * (ANYRES_CROPS if getattr(config, "image_grid_pinpoints", None) else 1) + size // patch


def working_memory(config, itemsize: int) -> int:
    """Bytes of KV cache + activations + headroom of one encode in a compute dtype of `itemsize` bytes."""
    text = getattr(config, "text_config", None) or config
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    positions = image_positions(config) + TEXT_POSITIONS + MAX_NEW_TOKENS
    kv_cache = 2 * text.num_hidden_layers * kv_heads * head_dim * positions * itemsize
    activations = positions * (4 * text.intermediate_size + heads * positions) * itemsize
    return kv_cache + activations + HEADROOM
