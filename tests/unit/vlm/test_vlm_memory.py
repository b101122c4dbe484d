"""The VLM encode's working-memory estimate (loaders/vlm/memory.py) on the published 7B configs' shapes.

The KV cache is what transformers' DynamicCache holds: per layer a key and a value of [1, kv_heads, T, head_dim].
"""

from __future__ import annotations

from types import SimpleNamespace

from lmm_edit.loaders.encoder import MAX_NEW_TOKENS
from lmm_edit.loaders.vlm.memory import HEADROOM, QWEN_IMAGE_POSITIONS, TEXT_POSITIONS, image_positions, working_memory

# llava-hf/llava-1.5-7b-hf and Qwen/Qwen2-VL-7B-Instruct config.json (the fields the estimate reads)
LLAVA_15_7B = SimpleNamespace(
    text_config=SimpleNamespace(num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, hidden_size=4096,
                                intermediate_size=11008),
    vision_config=SimpleNamespace(image_size=336, patch_size=14),
)
QWEN2_VL_7B = SimpleNamespace(
    text_config=SimpleNamespace(num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, hidden_size=3584,
                                intermediate_size=18944),
    vision_config=SimpleNamespace(patch_size=14, spatial_merge_size=2),
)


def _kv(layers, kv_heads, head_dim, positions, itemsize=2):
    return layers * 2 * kv_heads * positions * head_dim * itemsize


def test_llava_positions_are_the_patch_grid_and_the_kv_cache_is_counted_once_per_layer():
    assert image_positions(LLAVA_15_7B) == 24 * 24 + 24
    positions = 600 + TEXT_POSITIONS + MAX_NEW_TOKENS
    kv = _kv(32, 32, 128, positions)
    activations = working_memory(LLAVA_15_7B, 2) - kv - HEADROOM
    assert activations == positions * (4 * 11008 + 32 * positions) * 2
    assert 1.5e9 < working_memory(LLAVA_15_7B, 2) < 2e9  # ~1.7 GB beside 14 GB of fp16 weights


def test_grouped_kv_heads_shrink_the_cache_and_dynamic_resolution_takes_the_cap():
    assert image_positions(QWEN2_VL_7B) == QWEN_IMAGE_POSITIONS
    positions = QWEN_IMAGE_POSITIONS + TEXT_POSITIONS + MAX_NEW_TOKENS
    kv = _kv(28, 4, 128, positions)
    assert working_memory(QWEN2_VL_7B, 2) == kv + positions * (4 * 18944 + 28 * positions) * 2 + HEADROOM
    assert working_memory(QWEN2_VL_7B, 4) > working_memory(QWEN2_VL_7B, 2)
