"""Reading tensors from SmartEdit's release `.bin` files and from `.safetensors` files.

The release `.bin` files were written by DeepSpeed ZeRO-2 training (TencentARC/SmartEdit
`train/DS_SmartEdit_train.py`, `LLMSDTrainer._save`): each tensor may be a view of one
multi-GB flat buffer. They are opened with `torch.load(weights_only=True, mmap=True)` so that
nothing is read until a tensor is touched, and only the tensors kept are cloned into their own
storage (research/smartedit.md §2.3).
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import SmartEditLoadError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _bin_open(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, zipfile.BadZipFile, EOFError) as err:
        raise SmartEditLoadError(
            path,
            "a complete torch.save file",
            f"a file torch cannot read ({str(err).splitlines()[0][:160]}); it is {path.stat().st_size} bytes, "
            "probably truncated by an interrupted download",
            "download the file again and compare its size with the one on the model page",
        ) from err
    except pickle.UnpicklingError as err:
        raise SmartEditLoadError(
            path,
            "a plain dict of tensors loadable with torch.load(weights_only=True)",
            f"a pickle with other objects ({str(err).splitlines()[0][:160]})",
            "re-save it as a dict of tensors, or convert it with `python -m lmm_edit convert-smartedit`",
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SmartEditLoadError(
            path, "a dict of tensors", f"an object of type {type(state).__name__}", "use the release file as published"
        )
    return state


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise SmartEditLoadError(path, "a weight file", "nothing at this path", "check the folder and the file name")


def read_tensors(
    path: str | Path,
    keep: Callable[[str], bool] | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Tensors of `path` whose key passes `keep`, each in its own storage (cast to `dtype` if given).

    Integer tensors (position ids) keep their dtype.
    """
    path = Path(path)
    _check_exists(path)
    out: dict[str, torch.Tensor] = {}

    def own(t: torch.Tensor) -> torch.Tensor:
        if dtype is not None and t.is_floating_point() and t.dtype != dtype:
            return t.to(dtype).contiguous()
        return t.contiguous().clone()

    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    if keep is None or keep(key):
                        out[key] = own(handle.get_tensor(key))
        except SafetensorError as err:
            raise SmartEditLoadError(
                path,
                "a complete safetensors file",
                f"an unreadable file ({err}); it is {path.stat().st_size} bytes, probably truncated",
                "download or convert the file again",
            ) from err
        return out
    state = _bin_open(path)
    for key, value in state.items():
        if keep is None or keep(key):
            out[key] = own(value)
    return out


def read_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor of `path`, without reading tensor data (mmap for `.bin`)."""
    path = Path(path)
    _check_exists(path)
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
        except SafetensorError as err:
            raise SmartEditLoadError(
                path, "a complete safetensors file", f"an unreadable file ({err})", "download or convert it again"
            ) from err
    return {k: tuple(v.shape) for k, v in _bin_open(path).items()}


def read_metadata(path: str | Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file ({} for `.bin`)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    _check_exists(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except SafetensorError as err:
        raise SmartEditLoadError(
            path, "a complete safetensors file", f"an unreadable file ({err})", "download or convert it again"
        ) from err


def read_rows(path: str | Path, key: str, stop: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Rows [0, stop) of the 2-D tensor `key` of `path`, read without loading the rest of the file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            rows = handle.get_slice(key)[:stop]
    else:
        rows = _bin_open(path)[key][:stop]
    rows = rows.contiguous().clone() if dtype is None else rows.to(dtype).contiguous()
    return rows


def read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SmartEditLoadError(path, "a JSON file", f"invalid JSON ({err})", "restore the file from its source") from err


def first_existing(paths: Iterable[Path]) -> Path | None:
    for p in paths:
        if p.is_file():
            return p
    return None
