"""A tiny random transformers CLIP folder with both towers, its tokenizer and image processor.

Laid out as openai/clip-vit-large-patch14 is published (config.json with text_config and
vision_config, weights, vocab.json/merges.txt, preprocessor_config.json), a few hundred KB.
"""

from __future__ import annotations

import pathlib


def write_tiny_clip(folder: pathlib.Path, seed: int = 0) -> pathlib.Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from lmm_edit.selfcheck.clip_tokenizer import write_clip_tokenizer

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=512, eos_token_id=513,
                         pad_token_id=513),  # write_clip_tokenizer: 512 byte tokens, then start and end
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    write_clip_tokenizer(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
