"""Every file a loader of the pack reads, opened here, with errors a user can act on.

`.bin`/`.pt`/`.pth` go through ``torch.load(weights_only=True)``, `.safetensors` through ``safe_open``,
JSON through ``read_json``. Whatever goes wrong (a missing file, a download cut short, a pickle with
foreign objects, invalid JSON) raises ``ModelFileError`` naming the file, what was expected, what was
found and the fix.

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

REDOWNLOAD = "download the file again and compare its size with the one on the model page"
DICT_OF_TENSORS = "a dict of tensors"


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:160]


def check_file(path: Path, expected: str = "a weight file") -> Path:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, expected, "nothing at this path", "check the folder and the file name")
    return path


def load_torch_file(path: Path, *, expected_object: str, pickle_fix: str, mmap: bool = False) -> object:
    """``torch.load(weights_only=True)`` on CPU; unreadable or unsafe files raise ``ModelFileError``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (RuntimeError, zipfile.BadZipFile, EOFError) as err:
        raise ModelFileError(
            path, "a complete torch.save file",
            f"a file torch cannot read ({_first_line(err)}); it is {path.stat().st_size} bytes, "
            "probably truncated by an interrupted download",
            REDOWNLOAD,
        ) from err
    except pickle.UnpicklingError as err:
        raise ModelFileError(path, expected_object, f"a pickle with other objects ({_first_line(err)})", pickle_fix) from err


@contextmanager
def open_safetensors(path: Path) -> Iterator:
    """``safe_open`` on CPU; a truncated or foreign file raises ``ModelFileError`` (also from reads inside the block)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            yield handle
    except SafetensorError as err:
        raise ModelFileError(
            path, "a complete safetensors file",
            f"an unreadable file ({err}); it is {path.stat().st_size} bytes, probably truncated",
            REDOWNLOAD,
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
    pickle_fix: str = REDOWNLOAD,
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
    return {k: tuple(v.shape) for k, v in _torch_state(path, DICT_OF_TENSORS, REDOWNLOAD, True).items()}


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file ({} for `.bin`)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    with open_safetensors(check_file(path)) as handle:
        return dict(handle.metadata() or {})


def read_rows(path: str | Path, key: str, stop: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Rows [0, stop) of the 2-D tensor ``key`` of ``path``, read without loading the rest of the file."""
    path = check_file(path)
    if path.suffix == ".safetensors":
        with open_safetensors(path) as handle:
            rows = handle.get_slice(key)[:stop]
    else:
        rows = _torch_state(path, DICT_OF_TENSORS, REDOWNLOAD, True)[key][:stop]
    return rows.contiguous().clone() if dtype is None else rows.to(dtype).contiguous()


def read_json(path: str | Path, fix: str = "restore the file from its source") -> dict:
    """A JSON file as a dict; a missing or invalid file raises ``ModelFileError``."""
    path = check_file(path, "a JSON file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelFileError(path, "a JSON file", f"invalid JSON ({err})", fix) from err
