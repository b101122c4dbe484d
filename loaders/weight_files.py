"""Every file a loader of the pack reads, opened here, with errors a user can act on.

`.bin`/`.pt`/`.pth` go through ``torch.load(weights_only=True)``, `.safetensors` through ``safe_open``,
JSON through ``read_json``. Whatever goes wrong (a missing file, a download cut short, a pickle with
foreign objects, invalid JSON) raises ``ModelFileError`` naming the file, what was expected, what was
found and the fix. A file that exists but cannot be read is a permission problem, not a missing one; what is
wrong with a file torch cannot read (cut short, a refused pickle, not a weight file) is told by ``file_faults``.

SmartEdit's release `.bin` files were written by DeepSpeed ZeRO-2 training (TencentARC/SmartEdit
`train/DS_SmartEdit_train.py`, ``LLMSDTrainer._save``): each tensor may be a view of one multi-GB flat
buffer. ``read_tensors(..., mmap=True)`` opens such a file memory-mapped, so nothing is read until a
tensor is touched, and copies only the tensors kept into their own storage.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import ModelFileError
from .file_faults import (
    LEGACY_MAGIC,
    TRUNCATED_FIX,
    ZIP_MAGIC,
    damaged,
    ends_inside_global,
    first_line,
    not_weights,
    refused_global,
)

PICKLE_FIX = ("use the file as published, or re-save it as a plain dict of tensors (torch.save(state_dict)) or as "
              ".safetensors; the pack never runs code from a weight file")
DICT_OF_TENSORS = "a dict of tensors"
def check_file(path: Path, expected: str = "a weight file") -> Path:
    """``path`` as a ``Path`` after checking it is a file this process can read."""
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(path, expected, "a folder", "point at the file inside the folder, not the folder")
    if not path.is_file():
        raise ModelFileError(path, expected, "nothing at this path", "check the folder and the file name")
    try:
        with open(path, "rb"):
            pass
    except PermissionError as err:
        raise ModelFileError(
            path, f"{expected} readable by this user", "a file that exists but cannot be read (permission denied)",
            f"make it readable for the user running ComfyUI: chmod a+r '{path}' (or chown it to that user)",
        ) from err
    return path


def check_folder(path: str | Path, expected: str, fix: str) -> Path:
    """``path`` after checking it is a folder this process can list (a permission problem is not a missing folder)."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFileError(path, expected, "a file" if path.exists() else "no folder at this path", fix)
    try:
        next(path.iterdir(), None)
    except PermissionError as err:
        raise ModelFileError(
            path, f"{expected} readable by this user", "a folder that exists but cannot be listed (permission denied)",
            f"make it readable for the user running ComfyUI: chmod -R a+rX '{path}' (or chown it to that user)",
        ) from err
    return path


def load_torch_file(path: Path, *, expected_object: str, pickle_fix: str, mmap: bool = False) -> object:
    """``torch.load(weights_only=True)`` on CPU; unreadable or unsafe files raise ``ModelFileError``.

    mmap needs the zip format: a legacy-format (non-zip) file is read again without it.
    """
    path = check_file(path, expected_object)
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:
            if not mmap or zipfile.is_zipfile(path):
                raise
            return torch.load(path, map_location="cpu", weights_only=True, mmap=False)  # legacy format
    except pickle.UnpicklingError as err:
        with open(path, "rb") as handle:
            head = handle.read(4)
        refused = refused_global(err)
        if (refused.startswith("Unsupported operand") or not head.startswith((ZIP_MAGIC, LEGACY_MAGIC))
                or (head.startswith(LEGACY_MAGIC) and ends_inside_global(path, refused))):
            raise damaged(path, err) from err  # bytes no pickle writes: cut short, or not a torch file at all
        raise ModelFileError(
            path, expected_object, f"a pickle with other objects, refused by weights_only ({refused})", pickle_fix,
        ) from err
    except PermissionError as err:
        raise ModelFileError(path, expected_object, "a file this user cannot read (permission denied)",
                             f"make it readable for the user running ComfyUI: chmod a+r '{path}'") from err
    except Exception as err:  # anything else torch.load meets (EOFError, struct.error, zip errors) is a damaged file
        raise damaged(path, err) from err


@contextmanager
def open_safetensors(path: Path) -> Iterator:
    """``safe_open`` on CPU; a truncated or foreign file raises ``ModelFileError`` (also from reads inside the block)."""
    path = check_file(path, "a safetensors file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            yield handle
    except SafetensorError as err:
        foreign = not_weights(path, "a safetensors file")
        if foreign is not None:
            raise foreign from err
        raise ModelFileError(
            path, "a complete safetensors file",
            f"an unreadable file ({first_line(err)}); it is {path.stat().st_size} bytes, probably truncated",
            TRUNCATED_FIX,
        ) from err


def _torch_state(path: Path, expected_object: str, pickle_fix: str, mmap: bool) -> dict[str, torch.Tensor]:
    state = load_torch_file(path, expected_object=expected_object, pickle_fix=pickle_fix, mmap=mmap)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(path, expected_object, f"an object of type {type(state).__name__}", pickle_fix)
    return state


def read_tensors(
    path: str | Path,
    keep: Callable[[str], bool] | None = None,
    dtype: torch.dtype | None = None,
    *,
    mmap: bool = False,
    expected_object: str = DICT_OF_TENSORS,
    pickle_fix: str = PICKLE_FIX,
) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` or `torch.save` file whose key passes ``keep``; floating ones cast to ``dtype``.

    mmap: open a `.bin` memory-mapped and give every kept tensor its own storage (see the module doc).
    Integer tensors (position ids) keep their dtype.
    """
    path = check_file(path, expected_object)

    def take(t: torch.Tensor) -> torch.Tensor:
        if dtype is not None and t.is_floating_point() and t.dtype != dtype:
            return t.to(dtype).contiguous()
        return t.contiguous().clone() if mmap else t

    if path.suffix == ".safetensors":
        with open_safetensors(path) as handle:
            return {k: take(handle.get_tensor(k)) for k in handle.keys() if keep is None or keep(k)}
    state = _torch_state(path, expected_object, pickle_fix, mmap)
    return {k: take(v) for k, v in state.items() if keep is None or keep(k)}


def read_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor of ``path``, without reading tensor data (mmap for `.bin`)."""
    path = check_file(path)
    if path.suffix == ".safetensors":
        with open_safetensors(path) as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    return {k: tuple(v.shape) for k, v in _torch_state(path, DICT_OF_TENSORS, PICKLE_FIX, True).items()}


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file ({} for `.bin`)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    with open_safetensors(check_file(path)) as handle:
        return dict(handle.metadata() or {})


def _no_tensor(path: Path, key: str, keys) -> ModelFileError:
    return ModelFileError(path, f"the tensor {key}", f"{len(keys)} tensors without it",
                          "download the file again; a sharded model needs its index and every shard of one download")


def read_rows(path: str | Path, key: str, stop: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Rows [0, stop) of the 2-D float tensor ``key`` of ``path``, read without loading the rest of the file."""
    path = check_file(path)
    if path.suffix == ".safetensors":
        with open_safetensors(path) as handle:
            if key not in handle.keys():
                raise _no_tensor(path, key, handle.keys())
            rows = handle.get_slice(key)[:stop]
    else:
        state = _torch_state(path, DICT_OF_TENSORS, PICKLE_FIX, True)
        if key not in state:
            raise _no_tensor(path, key, state)
        rows = state[key][:stop]
    if not rows.is_floating_point():
        raise ModelFileError(path, f"{key} as floating-point weights", f"a {rows.dtype} tensor",
                             "download the file again (integer or bool weights mean a damaged or foreign file)")
    return rows.contiguous().clone() if dtype is None else rows.to(dtype).contiguous()


def read_json(path: str | Path, fix: str = "restore the file from its source") -> dict:
    """A JSON object file as a dict; a missing, unreadable, non-UTF-8 or invalid file raises ``ModelFileError``."""
    path = check_file(path, "a JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as err:
        raise ModelFileError(path, "a UTF-8 JSON file", f"bytes that are not UTF-8 (at byte {err.start})", fix) from err
    except json.JSONDecodeError as err:
        raise ModelFileError(path, "a JSON file", f"invalid JSON ({err})", fix) from err
    if not isinstance(data, dict):
        raise ModelFileError(path, "a JSON object ({...})", f"a JSON {type(data).__name__}", fix)
    return data


def open_sentencepiece(path: str | Path, fix: str):
    """A ``sentencepiece.SentencePieceProcessor`` of ``path``; a file it cannot parse raises ``ModelFileError``."""
    import sentencepiece as spm

    path = check_file(path, "a SentencePiece model (tokenizer.model)")
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError) as err:
        raise ModelFileError(
            path, "a SentencePiece model (tokenizer.model)",
            f"{path.stat().st_size} bytes SentencePiece cannot parse ({first_line(err)})", fix,
        ) from err
