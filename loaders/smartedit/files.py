"""Reading tensors from SmartEdit's release `.bin` files and from `.safetensors` files.

The release `.bin` files were written by DeepSpeed ZeRO-2 training (TencentARC/SmartEdit
`train/DS_SmartEdit_train.py`, `LLMSDTrainer._save`): each tensor may be a view of one
multi-GB flat buffer. They are opened with `torch.load(weights_only=True, mmap=True)` so that
nothing is read until a tensor is touched, and only the tensors kept are cloned into their own
storage (research/smartedit.md §2.3).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ..weight_files import load_torch_file, open_safetensors
from .errors import SmartEditLoadError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _bin_open(path: Path) -> dict[str, torch.Tensor]:
    state = load_torch_file(
        path, SmartEditLoadError, mmap=True,
        expected_object="a plain dict of tensors loadable with torch.load(weights_only=True)",
        pickle_fix="re-save it as a dict of tensors, or convert it with `python -m lmm_edit convert-smartedit`",
    )
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
        with open_safetensors(path, SmartEditLoadError) as handle:
            for key in handle.keys():
                if keep is None or keep(key):
                    out[key] = own(handle.get_tensor(key))
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
        with open_safetensors(path, SmartEditLoadError) as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    return {k: tuple(v.shape) for k, v in _bin_open(path).items()}


def read_metadata(path: str | Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file ({} for `.bin`)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    _check_exists(path)
    with open_safetensors(path, SmartEditLoadError) as handle:
        return dict(handle.metadata() or {})


def read_rows(path: str | Path, key: str, stop: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Rows [0, stop) of the 2-D tensor `key` of `path`, read without loading the rest of the file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        with open_safetensors(path, SmartEditLoadError) as handle:
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
