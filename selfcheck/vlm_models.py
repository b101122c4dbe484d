"""Tiny random vision-language models (LLaVA-1.5, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL) saved with save_pretrained.

Used by the MLLM encoder's unit tests and by the MLLM loader node's integration tests.

The tokenizer is byte-level BPE without merges (every byte one token) plus each family's special
tokens; image processors use the PIL backend (no torchvision needed).
"""

from __future__ import annotations

import pathlib

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

LLAVA_SPECIALS = ["<unk>", "<s>", "</s>", "<image>"]
QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
    "<|video_pad|>",
]


def byte_tokenizer(specials: list[str]) -> PreTrainedTokenizerFast:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer)
    wrapped.add_special_tokens({"additional_special_tokens": specials})
    return wrapped


def _llava_parts() -> tuple[PreTrainedTokenizerFast, CLIPVisionConfig, LlamaConfig]:
    tokenizer = byte_tokenizer(LLAVA_SPECIALS)
    tokenizer.unk_token, tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = "<unk>", "<s>", "</s>", "<unk>"
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=28,
        patch_size=14, projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer, vision, text


def write_tiny_llava(folder: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """LLaVA-1.5 layout: CLIP tower (28 px, 14 px patches -> 4 patch tokens + CLS), 2-layer MLP projector, Llama."""
    tokenizer, vision, text = _llava_parts()
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(folder)
    return folder


LLAVA_NEXT_PINPOINTS = [[28, 28], [28, 56], [56, 28], [56, 56]]  # anyres grids of 28 px crops


def write_tiny_llava_next(folder: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """LLaVA-NeXT layout: the LLaVA-1.5 tower on a base image plus anyres crops, packed with image_newline."""
    tokenizer, vision, text = _llava_parts()
    config = LlavaNextConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=LLAVA_NEXT_PINPOINTS, vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    LlavaNextForConditionalGeneration(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    LlavaNextImageProcessorPil(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}, image_grid_pinpoints=LLAVA_NEXT_PINPOINTS
    ).save_pretrained(folder)
    return folder


def write_tiny_qwen2_vl(folder: pathlib.Path, seed: int = 0, version: str = "2") -> pathlib.Path:
    """Qwen2-VL (version "2") or Qwen2.5-VL ("2.5") layout: 14 px patches, 2x2 merger, ~56x56 px images."""
    tokenizer = byte_tokenizer(QWEN_SPECIALS)
    tokenizer.eos_token, tokenizer.pad_token = "<|im_end|>", "<|endoftext|>"
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in QWEN_SPECIALS}
    text_config = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], bos_token_id=None,
    )
    tokens = dict(
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    if version == "2":
        vision = dict(
            depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2, in_channels=3,
        )
        model_class = Qwen2VLForConditionalGeneration
        config = Qwen2VLConfig(text_config=text_config, vision_config=vision, **tokens)
    else:
        vision = dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
            spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1], in_channels=3,
        )
        model_class = Qwen2_5_VLForConditionalGeneration
        config = Qwen2_5_VLConfig(text_config=text_config, vision_config=vision, **tokens)
    torch.manual_seed(seed)
    model_class(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    Qwen2VLImageProcessorPil(
        min_pixels=56 * 56, max_pixels=56 * 56, patch_size=14, merge_size=2, temporal_patch_size=2
    ).save_pretrained(folder)
    return folder
