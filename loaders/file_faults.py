"""What is wrong with a weight file torch or safetensors cannot read: cut short (zip or legacy format), a pickle
``weights_only`` refuses, or not a weight file at all (an HTML page or a Git LFS pointer saved under its name).

Messages keep one line of the library's error, without terminal colour codes (torch colours part of its
``weights_only`` message).
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import ModelFileError

TRUNCATED_FIX = "the file is truncated or corrupt: download the file again and compare its size with the one on the model page"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ZIP_MAGIC = b"PK\x03\x04"
LEGACY_MAGIC = b"\x80"  # pickle protocol 2+: torch.save(_use_new_zipfile_serialization=False)


def first_line(err: BaseException) -> str:
    """The error's first line without colour codes; a line ending in ":" (a heading) takes the next one along."""
    lines = [line.strip() for line in _ANSI.sub("", str(err)).splitlines() if line.strip()] or [type(err).__name__]
    line = lines[0] + (" " + lines[1] if lines[0].endswith(":") and len(lines) > 1 else "")
    return line[:300]


def refused_global(err: BaseException) -> str:
    """The line of a weights_only refusal that names what it refused (the global), without terminal colour codes."""
    lines = [line.strip() for line in _ANSI.sub("", str(err)).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "Unsupported global" in line or "WeightsUnpickler error:" in line or "GLOBAL " in line:
            detail = line.split("WeightsUnpickler error:")[-1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            return detail.split(". Please use")[0][:240]
    return first_line(err)


def not_weights(path: Path, expected: str) -> ModelFileError | None:
    """An HTML page or a Git LFS pointer saved under a weight file's name (what failed downloads leave)."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return ModelFileError(path, expected, f"an HTML page ({path.stat().st_size} bytes): the download saved an error "
                              "or login page", "download the file itself (a token may be needed for gated models)")
    if head.startswith(b"version https://git-lfs"):
        return ModelFileError(path, expected, "a Git LFS pointer, not the weights",
                              "run `git lfs pull` in the repository, or download the file itself")
    return None


def damaged(path: Path, err: BaseException) -> ModelFileError:
    """Why a torch.save file cannot be read: cut short (zip or legacy), or not a torch file at all."""
    foreign = not_weights(path, "a torch.save file")
    if foreign is not None:
        return foreign
    with open(path, "rb") as handle:
        head = handle.read(4)
    size = path.stat().st_size
    if head.startswith(ZIP_MAGIC):
        found = f"a zip-format torch file of {size} bytes, probably truncated by an interrupted download ({first_line(err)})"
    elif head.startswith(LEGACY_MAGIC):
        found = f"a legacy-format (non-zip) torch file of {size} bytes that ends too early: probably truncated"
    else:
        found = f"{size} bytes that are not a torch.save file ({refused_global(err)})"
    return ModelFileError(path, "a complete torch.save file", found, TRUNCATED_FIX)


def ends_inside_global(path: Path, refused: str) -> bool:
    """A legacy pickle cut inside a GLOBAL opcode ("c<module>\\n<name>\\n") reads as a refused, half-named global:
    the file then ends within a few bytes of that half name."""
    match = re.search(r"GLOBAL (\S*)", refused)
    if match is None:
        return False
    module, _, name = match.group(1).rpartition(".")
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - 512))
        tail = handle.read()
    # torch's unpickler drops the last byte of each line it reads (the newline it expects), so allow for it
    return tail.rfind(module.encode()) >= len(tail) - len(module) - len(name) - 3
