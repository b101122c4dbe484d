"""Opening weight files with errors a user can act on (truncated downloads, foreign pickles).

Every loader of the pack reads `.bin`/`.pt` through ``load_torch_file`` (``weights_only=True``)
and `.safetensors` through ``open_safetensors``; each raises the caller's ``ModelFileError``
subclass, so the message names the file, what was expected, what was found and the fix.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import ModelFileError

REDOWNLOAD = "download the file again and compare its size with the one on the model page"


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:160]


def load_torch_file(path: Path, error: type[ModelFileError], *, expected_object: str, pickle_fix: str,
                    mmap: bool = False) -> object:
    """``torch.load(weights_only=True)`` on CPU; unreadable or unsafe files raise ``error``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (RuntimeError, zipfile.BadZipFile, EOFError) as err:
        raise error(
            path, "a complete torch.save file",
            f"a file torch cannot read ({_first_line(err)}); it is {path.stat().st_size} bytes, "
            "probably truncated by an interrupted download",
            REDOWNLOAD,
        ) from err
    except pickle.UnpicklingError as err:
        raise error(path, expected_object, f"a pickle with other objects ({_first_line(err)})", pickle_fix) from err


@contextmanager
def open_safetensors(path: Path, error: type[ModelFileError]) -> Iterator:
    """``safe_open`` on CPU; a truncated or foreign file raises ``error`` (also from reads inside the block)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            yield handle
    except SafetensorError as err:
        raise error(
            path, "a complete safetensors file",
            f"an unreadable file ({err}); it is {path.stat().st_size} bytes, probably truncated",
            REDOWNLOAD,
        ) from err


def read_weight_file(path: Path, error: type[ModelFileError], keep=None, dtype: torch.dtype | None = None,
                     *, expected_object: str = "a dict of tensors", pickle_fix: str = REDOWNLOAD) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` or `torch.save` (`.bin`/`.pt`/`.pth`, read with ``weights_only=True``) file.

    keep: optional predicate on the key; dtype: floating tensors are cast to it while read.
    A missing file, an unreadable one or a `.bin` that is not a flat dict of tensors raises ``error``.
    """
    path = Path(path)
    if not path.is_file():
        raise error(path, expected_object, "nothing at this path", "check the folder and the file name")

    def take(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if dtype is not None and t.is_floating_point() and t.dtype != dtype else t

    if path.suffix == ".safetensors":
        with open_safetensors(path, error) as handle:
            return {k: take(handle.get_tensor(k)) for k in handle.keys() if keep is None or keep(k)}
    state = load_torch_file(path, error, expected_object=expected_object, pickle_fix=pickle_fix)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise error(path, expected_object, f"an object of type {type(state).__name__}", pickle_fix)
    return {k: take(v) for k, v in state.items() if keep is None or keep(k)}
