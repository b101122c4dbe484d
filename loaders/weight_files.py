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
