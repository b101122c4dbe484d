"""Loading a VLM folder's parts with transformers, so that every problem names the file and the fix.

transformers alone would load a folder with a missing weight (it initialises the weight randomly and logs a
report), and its errors for a truncated file, a pickle or a folder asking for its own code read as tracebacks
from deep inside safetensors or torch. Here:

- every weight file is found first (``model*.safetensors`` or ``pytorch_model*.bin``, through the shard
  index when there is one) and every safetensors header is read, so a truncated file is named, and so is an
  integer or bool weight (transformers would cast it silently; quantized folders excepted);
- the model is loaded with ``output_loading_info``: a missing weight (tied weights are not missing: transformers
  ties them after loading) or a weight of the wrong shape refuses the folder, listing the missing, wrong-shape
  and unexpected keys;
- code in the folder never runs: ``trust_remote_code=False`` for the tokenizer and the image processor, and the
  model class is the family's own transformers class (never ``auto_map``);
- any other error of transformers becomes ``ModelFileError`` naming the files it was reading.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import transformers
from huggingface_hub.errors import StrictDataclassError

from ..errors import ModelFileError
from ..file_faults import first_line, refused_global
from ..weight_files import open_safetensors, read_json
from .families import VLMFamily

SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
NON_FLOAT_DTYPES = {"BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64"}  # safetensors dtype names
SHOWN_KEYS = 6  # keys listed per kind in a message
DOWNLOAD_FIX = ("download the folder again (all model*.safetensors files and their index), e.g. with "
                "huggingface-cli download <repo> --local-dir <this folder>")
REMOTE_CODE_FIX = ("the pack never runs Python code from a model folder (trust_remote_code stays off); use a folder "
                   "of the same model saved with transformers' own classes")


def weight_files(folder: Path) -> list[Path]:
    """The folder's weight files: the shards an index names (each must exist), else the single file."""
    for index_name in (SAFETENSORS_INDEX, BIN_INDEX):
        index = folder / index_name
        if index.is_file():
            weight_map = read_json(index, fix=DOWNLOAD_FIX).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ModelFileError(index, "a shard index with a weight_map (key -> shard file)",
                                     "no weight_map", DOWNLOAD_FIX)
            shards = [folder / name for name in sorted(set(weight_map.values()))]
            absent = [shard.name for shard in shards if not shard.is_file()]
            if absent:
                raise ModelFileError(index, f"the {len(shards)} shards it lists", f"{', '.join(absent)} missing",
                                     DOWNLOAD_FIX)
            return shards
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return [folder / name]
    raise ModelFileError(folder, "the model weights: model.safetensors, or shards with model.safetensors.index.json",
                         "no weight file", DOWNLOAD_FIX)


def check_float_weights(file: Path) -> None:
    """Refuse integer or bool ``*.weight`` / ``*.bias`` tensors (transformers would cast them to floats silently)."""
    with open_safetensors(file) as handle:
        wrong = [f"{key} ({handle.get_slice(key).get_dtype()})" for key in handle.keys()
                 if key.endswith((".weight", ".bias")) and handle.get_slice(key).get_dtype() in NON_FLOAT_DTYPES]
    if wrong:
        raise ModelFileError(file, "floating-point weights and biases (F32, F16, BF16)",
                             f"{len(wrong)} integer or bool tensors ({_key_list(wrong)})",
                             "the file is damaged or was written by another tool; " + DOWNLOAD_FIX)


def _key_list(keys: list[str]) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def _files_text(files: list[Path]) -> str:
    return str(files[0]) if len(files) == 1 else f"{files[0].parent} ({', '.join(f.name for f in files)})"


def check_loading_info(info: dict, files: list[Path], model_class: str) -> None:
    """Refuse missing or wrong-shape weights (``output_loading_info`` of ``from_pretrained``), naming the keys."""
    missing = sorted(info.get("missing_keys") or ())
    mismatched = sorted(info.get("mismatched_keys") or ())
    unexpected = sorted(info.get("unexpected_keys") or ())
    if not missing and not mismatched:
        return  # unexpected keys alone: transformers' own report logs them; every weight of the model was read
    found = []
    if missing:
        found.append(f"{len(missing)} missing weights ({_key_list(missing)})")
    if mismatched:
        shapes = [f"{key} {tuple(got)} instead of {tuple(want)}" for key, got, want in mismatched]
        found.append(f"{len(mismatched)} weights of the wrong shape ({_key_list(shapes)})")
    if unexpected:
        found.append(f"{len(unexpected)} keys the model does not have ({_key_list(unexpected)})")
    raise ModelFileError(
        _files_text(files), f"every weight of {model_class} (the model config.json describes)", "; ".join(found),
        "the download is incomplete or the weights belong to another model: " + DOWNLOAD_FIX
        + "; keep config.json and the weights of the same model together",
    )


# What transformers raises for files it cannot use (config validation raises huggingface_hub's
# StrictDataclassError; malformed JSON values surface as AttributeError / TypeError / KeyError)
TRANSFORMERS_ERRORS = (OSError, ValueError, RuntimeError, TypeError, KeyError, AttributeError, ImportError,
                       StrictDataclassError)


def _first_line(err: BaseException) -> str:
    """The error's type and its first line, without terminal colour codes."""
    return f"{type(err).__name__}: {first_line(err)}"


def load_model(folder: Path, family: VLMFamily, dtype: torch.dtype | None) -> torch.nn.Module:
    """The family's transformers model from ``folder``; incomplete, wrong or unreadable weights raise
    ``ModelFileError``."""
    files = weight_files(folder)
    quantized = "quantization_config" in read_json(folder / "config.json")
    for file in files:
        if file.suffix == ".safetensors" and not quantized:
            check_float_weights(file)  # reads the header: a truncated or foreign file is named here too
    model_class = getattr(transformers, family.model_class)
    try:
        # local_files_only: a node never downloads (python -m lmm_edit download does, when asked)
        model, info = model_class.from_pretrained(
            folder, dtype=dtype, local_files_only=True, output_loading_info=True, ignore_mismatched_sizes=True,
        )
    except pickle.UnpicklingError as err:
        raise ModelFileError(
            _files_text(files), "weights torch can load safely (weights_only=True)",
            f"a pickle with other objects ({refused_global(err)})",
            "use the model.safetensors files of the model instead of pytorch_model.bin",
        ) from err
    except TRANSFORMERS_ERRORS as err:
        raise ModelFileError(
            folder, f"config.json and {_files_text(files)} that transformers can load as {family.model_class}",
            _first_line(err), "use the config.json that came with these weights; " + DOWNLOAD_FIX,
        ) from err
    check_loading_info(info, files, family.model_class)
    return model


def load_processor(folder: Path, kind: str) -> object:
    """The folder's tokenizer (``kind`` "tokenizer") or image processor ("image processor"), never its own code."""
    names = ("tokenizer.json", "tokenizer_config.json") if kind == "tokenizer" else ("preprocessor_config.json",)
    needed = ("tokenizer.json", "tokenizer.model") if kind == "tokenizer" else names  # one of them must be there
    if not any((folder / name).is_file() for name in needed):
        raise ModelFileError(folder, f"the {kind} ({' or '.join(needed)})", "no such file",
                             f"copy {', '.join(names)} of the model's download into the folder")
    try:
        if kind == "tokenizer":
            return transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        return transformers.AutoImageProcessor.from_pretrained(
            folder, backend="pil", local_files_only=True, trust_remote_code=False,
        )
    except TRANSFORMERS_ERRORS as err:
        remote = "trust_remote_code" in str(err)
        raise ModelFileError(
            folder, f"the {kind} files {', '.join(names)} of the model (as save_pretrained writes them)",
            _first_line(err), REMOTE_CODE_FIX if remote else
            f"copy {', '.join(names)} of the model's download into the folder",
        ) from err
