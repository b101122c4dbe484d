"""Loading the InstructAny2Pix LLM folder (`ckpts/llm-retrained/`), as the reference's `build_lm` reads it.

Layout (a transformers `save_pretrained` folder, jacklishufan/InstructAny2Pix @ d11e49b `pipeline.py`):
`config.json` (`model_type: instructany2pix`), `generation_config.json`, the weights as `model.safetensors`,
`pytorch_model.bin`, or shards named by `model.safetensors.index.json` / `pytorch_model.bin.index.json`
(`weight_map`), and `tokenizer/`. Keys `model.*` and `lm_head.weight`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ModelFileError
from ..llama import rope_inv_freq
from ..operations import DEFAULT_OPERATIONS
from ..shard_index import check_shard_holds, read_shard_index
from ..state_checks import load_checked
from ..weight_files import check_folder, read_json, read_tensors
from .llm import PREDICTOR, PROJECTOR, Any2PixLLM, Any2PixLLMConfig
from .tokenizer import Any2PixTokenizer

MODEL_TYPE = "instructany2pix"  # InstructAny2PixLMConfig.model_type (any2pix_llama.py)
SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
RELEASE_FIX = "point the loader at the InstructAny2Pix `llm-retrained` folder (config.json, weights, tokenizer/)"


def _json(path: Path) -> dict:
    return read_json(path, fix="restore the file from the release")


def read_llm_config(folder: Path) -> dict:
    check_folder(folder, "an InstructAny2Pix LLM folder", RELEASE_FIX)
    path = folder / "config.json"
    if not path.is_file():
        raise ModelFileError(folder, "an LLM folder with config.json", "no config.json", RELEASE_FIX)
    config = _json(path)
    if config.get("model_type") != MODEL_TYPE:
        raise ModelFileError(
            path, f"model_type {MODEL_TYPE!r} (InstructAny2PixLMConfig)", f"model_type {config.get('model_type')!r}",
            RELEASE_FIX + "; a plain Vicuna/LLaMA has no vae_projector_image / vae_predictor_image",
        )
    return config


def weight_files(folder: Path) -> list[Path]:
    """The weight files of the folder: one single file, or the shards of an index (safetensors first)."""
    for name in INDEX_FILES:
        index = folder / name
        if index.is_file():
            return sorted(set(read_shard_index(index).values()))
    for name in SINGLE_FILES:
        if (folder / name).is_file():
            return [folder / name]
    raise ModelFileError(
        folder, "LLM weights: model.safetensors, pytorch_model.bin or a sharded index (*.index.json)",
        "none of them", RELEASE_FIX,
    )


def _needed(key: str) -> bool:
    if key == "lm_head.weight":
        return True
    if not key.startswith("model."):
        return False
    rest = key[len("model."):]
    return rest.startswith(("embed_tokens.", "layers.", "norm.", PROJECTOR + ".", PREDICTOR + ".")) and "rotary_emb" not in rest


def read_llm_state(folder: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    index = next((folder / n for n in INDEX_FILES if (folder / n).is_file()), None)
    placed = read_shard_index(index) if index is not None else {}
    for file in weight_files(folder):
        part = read_tensors(file, _needed, dtype, expected_object="a dict of LLM tensors")
        if index is not None:
            check_shard_holds(file, part, placed, index, _needed)
        state.update(part)
    return state


def _module_state(state: dict[str, torch.Tensor], config: Any2PixLLMConfig) -> dict[str, torch.Tensor]:
    """File keys -> `Any2PixLLM` keys (`model.X` -> `llm.X`, head, projector/predictor, computed inv_freq)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "lm_head.weight":
            out["llm.lm_head.weight"] = value
            continue
        rest = key[len("model."):]
        if rest.startswith((PROJECTOR + ".", PREDICTOR + ".")):
            name, _, param = rest.partition(".")
            out[f"{name}.0.{param}" if config.depth == 1 else f"{name}.{param}"] = value
        else:
            out["llm." + rest] = value
    # transformers 4.34 keeps inv_freq out of the weight file (persistent=False); computed in fp32 as it does
    out["llm.inv_freq"] = rope_inv_freq(config.llama.head_dim, config.llama.rope_theta)
    return out


def _file_key(key: str) -> str:
    """`Any2PixLLM` key -> the key of the release files (projector/predictor layers keep the module's numbering)."""
    if key == "llm.lm_head.weight":
        return "lm_head.weight"
    return "model." + key.removeprefix("llm.")


def load_llm(
    folder: str | Path, dtype: torch.dtype = torch.float32, operations=DEFAULT_OPERATIONS
) -> tuple[Any2PixLLM, Any2PixTokenizer]:
    """The LLM (on CPU, in `dtype`) and its tokenizer from an `llm-retrained` folder.

    Checks at load time: model_type, tensor names and shapes, tokenizer length vs embedding rows.
    """
    folder = Path(folder)
    config_json = read_llm_config(folder)
    state = read_llm_state(folder, dtype)
    config = Any2PixLLMConfig.from_shapes({k: tuple(v.shape) for k, v in state.items()}, config_json, folder)
    tokenizer = Any2PixTokenizer(folder / "tokenizer")
    if tokenizer.vocab_size != config.llama.vocab:
        raise ModelFileError(
            folder / "tokenizer", f"a tokenizer of {config.llama.vocab} tokens (the embedding rows of the weights)",
            f"{tokenizer.vocab_size} tokens", "use the tokenizer/ folder saved with these LLM weights",
        )
    with torch.device("meta"):
        model = Any2PixLLM(config, operations)
    module_state = _module_state(state, config)
    load_checked(model, module_state, folder, "the LLaMA decoder, lm_head, vae_projector_image and vae_predictor_image "
                 f"tensors of a {config.depth}-layer projector", RELEASE_FIX, _file_key)
    model.llm.inv_freq = model.llm.inv_freq.float()
    return model.eval(), tokenizer


def read_generation_config(folder: str | Path) -> dict:
    """`generation_config.json` of the LLM folder ({} when absent: transformers' GenerationConfig defaults)."""
    path = Path(folder) / "generation_config.json"
    return _json(path) if path.is_file() else {}
