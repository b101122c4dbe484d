"""LLaVA-1.1 from its published delta weights and the original LLaMA-1 weights, one delta shard at a time.

The arithmetic is that of LLaVA's ``llava/model/apply_delta.py`` (haotian-liu/LLaVA @ c121f04): both models
are read in fp16; every delta tensor that the base also has gets the base added in fp16 (``param += base``);
``model.embed_tokens.weight`` and ``lm_head.weight``, whose delta has 3 more vocabulary rows than the base
(``<im_patch>``, ``<im_start>``, ``<im_end>``), get the base added to their first rows only; delta tensors the
base lacks must be ``model.mm_projector.*`` and are kept as they are; base tensors the delta lacks are
dropped. The delta's config and tokenizer files are the target's. Rotary ``inv_freq`` buffers found in old
checkpoints are not weights (transformers recomputes them) and are not written.

Unlike apply_delta (which loads both models whole, about 3x the model size in RAM), each delta shard is
merged and written before the next is read, so memory is bounded by one shard plus the base tensors it needs.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from .errors import ModelFileError
from .shard_index import read_shard_index
from .weight_files import load_torch_file, open_safetensors, read_json

EXTRA_ROWS = 3  # LLaVA-1.1's added tokens
ROWS_ADDED_KEYS = ("model.embed_tokens.weight", "lm_head.weight")
DELTA_ONLY_PREFIX = "model.mm_projector."
LLAMA1_CONTEXT = 2048  # LLaMA-1 max_position_embeddings; Llama-2 has 4096
LLAMA1_VOCAB = 32000
SIZE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer.json", "generation_config.json")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
BASE_FIX = ("use the original LLaMA-1 weights in Hugging Face format (config.json + shards), the same size as the "
            "delta (7B for LLaVA-Lightning-7B-delta-v1-1, 13B for LLaVA-13b-delta-v1-1): not Llama-2, not Vicuna")


def read_config(folder: Path, role: str) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelFileError(path, f"the {role}'s config.json (a Hugging Face model folder)",
                              f"no such file (folder holds {sorted(p.name for p in folder.iterdir())[:8]})"
                              if folder.is_dir() else "no such folder",
                              BASE_FIX if role == "base" else "download it with: python -m lmm_edit download llava-7b-delta")
    return read_json(path, fix=BASE_FIX if role == "base" else "download it again: python -m lmm_edit download llava-7b-delta")


def weight_map(folder: Path) -> dict[str, Path]:
    """Tensor name -> shard file, from the index or the single weight file."""
    for name in INDEX_FILES:
        if (folder / name).is_file():
            return read_shard_index(folder / name)
    for name in SINGLE_FILES:
        if (folder / name).is_file():
            return dict.fromkeys(_shard_keys(folder / name), folder / name)
    raise ModelFileError(folder, "Hugging Face weight files (model*.safetensors or pytorch_model*.bin, with index)",
                          f"{sorted(p.name for p in folder.iterdir())[:8]}",
                          "for Meta's consolidated.*.pth run transformers' convert_llama_weights_to_hf.py first")


def _shard_keys(path: Path) -> list[str]:
    return list(_open_shard(path).keys()) if path.suffix != ".safetensors" else _safetensors_keys(path)


def _safetensors_keys(path: Path) -> list[str]:
    with open_safetensors(path) as handle:
        return list(handle.keys())


def _open_shard(path: Path):
    """A `.bin` shard memory-mapped (pages are read on use), or a safetensors shard read lazily."""
    if path.suffix == ".safetensors":
        return _LazySafetensors(path)
    state = load_torch_file(path, expected_object="a dict of tensors", pickle_fix=BASE_FIX, mmap=True)
    if not isinstance(state, dict):
        raise ModelFileError(path, "a dict of tensors", type(state).__name__, BASE_FIX)
    return state


class _LazySafetensors:
    """Mapping view of one safetensors file: tensors are read when asked for."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.names = _safetensors_keys(path)

    def keys(self):
        return list(self.names)

    def __getitem__(self, key: str) -> torch.Tensor:
        with open_safetensors(self.path) as handle:
            return handle.get_tensor(key)


def _is_buffer(key: str) -> bool:
    return key.endswith("rotary_emb.inv_freq")


def check_base(base_dir: Path, base: dict, delta: dict) -> None:
    """Refuses what is not LLaMA-1 of the delta's size, naming what was found."""
    found = []
    name = f"{base_dir.name} {base.get('_name_or_path', '')}".lower()
    if "vicuna" in name:
        found.append("a Vicuna folder (a fine-tune of LLaMA; the delta was made against LLaMA-1 itself)")
    if any(tag in name for tag in ("llama-2", "llama2", "llama_2", "llava")):
        found.append(f"a folder named {base_dir.name!r} / {base.get('_name_or_path')!r}, not LLaMA-1")
    if base.get("model_type", "llama") != "llama":
        found.append(f"model_type {base.get('model_type')!r}")
    if base.get("max_position_embeddings", LLAMA1_CONTEXT) != LLAMA1_CONTEXT:
        found.append(f"max_position_embeddings {base['max_position_embeddings']} (Llama-2 has 4096, LLaMA-1 2048)")
    if base.get("rope_theta", 10000.0) != 10000.0 or base.get("rope_scaling"):
        found.append(f"rope_theta {base.get('rope_theta')} / rope_scaling {base.get('rope_scaling')} (LLaMA-1: 10000, none)")
    if base.get("num_key_value_heads", base.get("num_attention_heads")) != base.get("num_attention_heads"):
        found.append(f"grouped-query attention (num_key_value_heads {base['num_key_value_heads']}): Llama-2 70B")
    if base.get("vocab_size") != LLAMA1_VOCAB and base.get("vocab_size") != delta.get("vocab_size", 0) - EXTRA_ROWS:
        found.append(f"vocab_size {base.get('vocab_size')} (LLaMA-1: {LLAMA1_VOCAB})")
    sizes = {k: (base.get(k), delta.get(k)) for k in SIZE_KEYS if base.get(k) != delta.get(k)}
    if sizes:
        found.append("another model size than the delta: " + ", ".join(f"{k} {b} vs delta {d}" for k, (b, d) in
                                                                        sizes.items()))
    if found:
        raise ModelFileError(base_dir / "config.json", "LLaMA-1 weights of the delta's size", "; ".join(found), BASE_FIX)


def _merge(key: str, delta: torch.Tensor, base: torch.Tensor | None, where: Path) -> torch.Tensor:
    merged = delta.to(torch.float16, copy=True)
    if base is None:
        if not key.startswith(DELTA_ONLY_PREFIX):
            raise ModelFileError(where, f"only {DELTA_ONLY_PREFIX}* beyond the base's tensors", f"{key}",
                                  "use the LLaVA-1.1 delta with its matching LLaMA-1 base")
        return merged
    base = base.to(torch.float16)
    if merged.shape == base.shape:
        return merged.add_(base)
    if key not in ROWS_ADDED_KEYS or merged.shape[0] < base.shape[0] or merged.shape[1:] != base.shape[1:]:
        raise ModelFileError(where, f"{key} of the base's shape {list(base.shape)}", f"{list(delta.shape)}", BASE_FIX)
    merged[: base.shape[0], : base.shape[1]].add_(base)
    return merged


def apply_delta(base_dir: Path, delta_dir: Path, target: Path, report: Callable[[str], None] = print) -> Path:
    """Writes LLaVA = base + delta into ``target`` (safetensors shards + index, config, tokenizer), atomically."""
    base_dir, delta_dir, target = Path(base_dir), Path(delta_dir), Path(target)
    if target.exists():
        raise ModelFileError(target, "a new folder", "an existing one", "delete it first, or pick another --name/--out")
    delta_config = read_config(delta_dir, "delta")
    check_base(base_dir, read_config(base_dir, "base"), delta_config)
    base_files, delta_files = weight_map(base_dir), weight_map(delta_dir)
    shards: dict[Path, list[str]] = defaultdict(list)
    for key, shard in delta_files.items():
        if not _is_buffer(key):
            shards[shard].append(key)
    staging = target.parent / f".{target.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        index, total = {}, 0
        for number, (delta_shard, keys) in enumerate(sorted(shards.items()), start=1):
            out_name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
            merged = _merge_shard(delta_shard, keys, base_files)
            save_file(merged, str(staging / out_name), metadata={"format": "pt"})
            total += sum(t.numel() * t.element_size() for t in merged.values())
            index.update(dict.fromkeys(merged, out_name))
            report(f"merged {delta_shard.name} ({len(keys)} tensors) -> {out_name}")
            del merged
        (staging / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": dict(sorted(index.items()))}, indent=2))
        shutil.copy2(delta_dir / "config.json", staging / "config.json")
        for name in TOKENIZER_FILES:
            if (delta_dir / name).is_file():
                shutil.copy2(delta_dir / name, staging / name)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _merge_shard(delta_shard: Path, keys: list[str], base_files: dict[str, Path]) -> dict[str, torch.Tensor]:
    delta = _open_shard(delta_shard)
    by_base: dict[Path | None, list[str]] = defaultdict(list)
    for key in keys:
        by_base[base_files.get(key)].append(key)
    merged = {}
    for base_shard, shard_keys in by_base.items():
        base = _open_shard(base_shard) if base_shard is not None else {}
        for key in shard_keys:
            merged[key] = _merge(key, delta[key], base[key] if base_shard is not None else None, delta_shard)
        del base
    return merged
