"""All-or-nothing output folder of `convert-smartedit`: write into a staging sibling, swap it in with one rename.

A conversion writes every file into ``<parent>/.<name>.converting-<pid>`` and then exchanges that folder
with ``<parent>/<name>`` in one ``renameat2(RENAME_EXCHANGE)`` (Linux): a kill at any moment leaves the
old output or the new one under the final name, never a mix. Where the exchange is unavailable (another
OS, a file system without it) the old folder is first renamed to ``.<name>.replaced-<pid>``; a kill
between the two renames leaves no folder under the final name, and the next run puts the old one back.
Staging folders of dead processes are removed by the next run, which reports them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import sys
import time
from pathlib import Path

from ..errors import ModelFileError

STOP_ENV = "LMM_EDIT_CONVERT_STOP_AT"  # test hook, see checkpoint()
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
_STALE = re.compile(r"\.(?P<name>.+)\.(?P<kind>converting|replaced)-(?P<pid>\d+)")


def checkpoint(name: str) -> None:
    """Test hook: with ``LMM_EDIT_CONVERT_STOP_AT=<name>`` the process prints ``checkpoint <name>`` and waits
    there, so tests/unit/smartedit/test_convert_atomic.py can ``kill -9`` it at that point of a conversion."""
    if os.environ.get(STOP_ENV) == name:
        sys.stdout.write(f"checkpoint {name}\n")
        sys.stdout.flush()
        time.sleep(600)


def staging_folder(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.converting-{os.getpid()}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a leftover of this very process cannot be in use
    if os.name == "nt":
        return True  # os.kill(pid, 0) would terminate the process on Windows: never remove what may be in use
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(dst: Path) -> list[str]:
    """Clean what killed conversions into ``dst`` left next to it; one line per thing done."""
    parent = dst.parent
    if not parent.is_dir():
        return []
    notes = []
    leftovers = sorted(p for p in parent.iterdir() if (m := _STALE.fullmatch(p.name)) and m["name"] == dst.name)
    for path in leftovers:
        match = _STALE.fullmatch(path.name)
        if _alive(int(match["pid"])):
            notes.append(f"left {path} alone: process {match['pid']} may still be converting (delete it if not)")
            continue
        if match["kind"] == "replaced" and not dst.exists():
            os.rename(path, dst)
            notes.append(f"restored the previous output {dst} from {path.name} (a conversion was killed mid-swap)")
            continue
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        notes.append(f"removed {path} left by an interrupted conversion")
    return notes


def check_destination(src: Path, dst: Path, kept_names: set[str]) -> None:
    """Refuse a destination that overlaps the source, is a file, or holds files a swap would delete."""
    src, target = src.resolve(), dst.resolve()
    if target == src or target.is_relative_to(src) or src.is_relative_to(target):
        raise ModelFileError(
            dst, "an output folder outside the source bundle", f"it overlaps the source {src}",
            f"convert into another folder, e.g. {src.parent / (src.name + '-converted')}",
        )
    if dst.exists() and not dst.is_dir():
        raise ModelFileError(dst, "a folder (or nothing) at the output path", "a file",
                             "remove the file or choose another output folder")
    others = sorted(p.name for p in dst.iterdir() if p.name not in kept_names) if dst.is_dir() else []
    if others:
        raise ModelFileError(
            dst, f"a new or empty folder, or one holding only a previous conversion ({', '.join(sorted(kept_names))})",
            f"other files that the conversion would delete: {', '.join(others[:8])}",
            "convert into a new folder, or move those files away",
        )


def make_staging(dst: Path) -> Path:
    staged = staging_folder(dst)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        staged.mkdir()
    except OSError as err:
        raise write_error(dst, staged, err) from err
    return staged


def write_error(dst: Path, file: Path, err: BaseException, size: int | None = None) -> ModelFileError:
    """A failed write as a ModelFileError naming the file and what to do (disk full, read-only, permission)."""
    reason = f"{type(err).__name__}: {err}"
    code = getattr(err, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(err):
        free = shutil.disk_usage(dst.parent).free if dst.parent.is_dir() else 0
        need = f" ({size / 2**20:.1f} MiB in this file)" if size is not None else ""
        fix = f"free space on that disk ({free / 2**20:.1f} MiB free now){need}, or convert into another folder"
        return ModelFileError(file, "room to write the converted bundle", f"a full disk ({reason})", fix)
    return ModelFileError(
        file, f"a writable folder for the output {dst}", reason,
        "choose an output folder you can write to (check its permissions and that its disk is not read-only)",
    )


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two folders (Linux renameat2); False when the system or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    rename = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if rename is None:
        return False
    if rename(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def swap_in(staged: Path, dst: Path) -> None:
    """Put the complete folder ``staged`` under the name ``dst`` (replacing an old one), then drop the old one."""
    if not dst.exists():
        os.rename(staged, dst)
        return
    if _exchange(staged, dst):
        checkpoint("swapped")
        shutil.rmtree(staged)  # the old output, now under the staging name
        return
    old = dst.with_name(f".{dst.name}.replaced-{os.getpid()}")
    os.rename(dst, old)
    checkpoint("half-swapped")
    os.rename(staged, dst)
    shutil.rmtree(old)
