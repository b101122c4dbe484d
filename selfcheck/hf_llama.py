"""LLaMA weights in Hugging Face's layout (the key names of ``LlamaForCausalLM``), sharded as the Hub's folders are.

Used by prepare-llava's tests and its memory benchmark to stand in for LLaMA-1 bases and LLaVA deltas.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

MM_PROJECTOR = "model.mm_projector."  # what a LLaVA delta adds beyond LLaMA's tensors


def hf_llama_shapes(vocab: int, width: int, layers: int, intermediate: int) -> dict[str, tuple[int, ...]]:
    """Every weight of a ``LlamaForCausalLM`` and its shape."""
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, width), "lm_head.weight": (vocab, width),
                                          "model.norm.weight": (width,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + f"self_attn.{n}_proj.weight": (width, width) for n in "qkvo"})
        shapes.update({p + "mlp.gate_proj.weight": (intermediate, width), p + "mlp.up_proj.weight": (intermediate, width),
                       p + "mlp.down_proj.weight": (width, intermediate), p + "input_layernorm.weight": (width,),
                       p + "post_attention_layernorm.weight": (width,)})
    return shapes


def write_hf_shards(folder: Path, tensors: dict[str, torch.Tensor], shards: int, config: dict,
                    file_format: str = "safetensors") -> None:
    """``tensors`` in ``shards`` files (``model-0000n-of-…safetensors`` or ``pytorch_model-…bin``), their index and
    ``config.json``, in a new ``folder``."""
    folder.mkdir(parents=True)
    keys = sorted(tensors)
    stem, index_name = ("model", "model.safetensors.index.json") if file_format == "safetensors" else \
        ("pytorch_model", "pytorch_model.bin.index.json")
    index = {}
    for n in range(shards):
        name = f"{stem}-{n + 1:05d}-of-{shards:05d}.{'safetensors' if file_format == 'safetensors' else 'bin'}"
        part = {k: tensors[k].contiguous() for k in keys[n::shards]}
        if file_format == "safetensors":
            save_file(part, str(folder / name))
        else:
            torch.save(part, folder / name)
        index.update(dict.fromkeys(part, name))
    (folder / index_name).write_text(json.dumps({"metadata": {}, "weight_map": index}))
    (folder / "config.json").write_text(json.dumps(config))
