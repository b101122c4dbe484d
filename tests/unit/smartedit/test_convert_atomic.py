"""convert-smartedit is all or nothing: `kill -9` at chosen points, a full disk, a write failing part-way.

The conversion runs in a child process that stops at a checkpoint of loaders/smartedit/staging.py
(LMM_EDIT_CONVERT_STOP_AT) and is killed there with SIGKILL; the output folder must then hold the
old conversion or the new one, whole, and the next run must clean what the killed one left.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess

import pytest

from lmm_edit.loaders.errors import ModelFileError
from lmm_edit.loaders.smartedit import find_bundle
from lmm_edit.loaders.smartedit.convert import convert_smartedit
from lmm_edit.loaders.smartedit.files import CONVERTED_NAMES, read_metadata
from lmm_edit.loaders.smartedit.staging import STOP_ENV, remove_stale
from pack_process import start_with_pack

CONVERT = (
    "import os, sys\n"
    "if os.environ.get('NO_EXCHANGE'):\n"
    "    import lmm_edit.loaders.smartedit.staging as staging\n"
    "    staging._exchange = lambda a, b: False\n"  # the fallback path of systems without renameat2
    "from lmm_edit.__main__ import main\n"
    "sys.exit(main(['convert-smartedit', *sys.argv[1:]]))\n"
)


def _runs(dst) -> set[tuple[str, str]]:
    """(conversion id, dtype) of every converted file in ``dst``: one element for a whole conversion."""
    return {(m["conversion"], m["dtype"]) for m in (read_metadata(dst / n) for n in CONVERTED_NAMES.values())}


def _kill_at(point: str, *args: str, no_exchange: bool = False) -> None:
    env = {**os.environ, STOP_ENV: point, **({"NO_EXCHANGE": "1"} if no_exchange else {})}
    proc = start_with_pack(CONVERT, *args, env=env)
    try:
        line = proc.stdout.readline()  # blocks until the checkpoint, or EOF if the child exits first
        assert line.strip() == f"checkpoint {point}", (line, proc.stderr.read() if proc.poll() is not None else "")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)  # reaped: its pid is no longer alive for the stale-folder check
    assert proc.returncode == -signal.SIGKILL


def _leftovers(parent, keep=("conv",)) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name not in keep)


@pytest.mark.parametrize("point", ["written-llm", "written-bim", "before-swap", "swapped"])
def test_a_kill_leaves_the_old_or_the_new_output_whole_and_the_next_run_cleans_up(fixture, tmp_path, point):
    dst = tmp_path / "conv"
    convert_smartedit(fixture.bundle, dst)
    old = _runs(dst)
    _kill_at(point, str(fixture.bundle), str(dst), "--dtype", "fp16")

    assert sorted(p.name for p in dst.iterdir()) == sorted(CONVERTED_NAMES.values())
    after = _runs(dst)
    assert len(after) == 1 and find_bundle(dst).layout == "converted"
    if point == "swapped":
        assert after != old and next(iter(after))[1] == "fp16"
    else:
        assert after == old
    stale = _leftovers(tmp_path)
    assert len(stale) == 1 and stale[0].startswith(".conv.converting-"), stale

    result = convert_smartedit(fixture.bundle, dst, "fp16")
    assert any(stale[0] in note and "interrupted" in note for note in result.notes), result.notes
    assert _leftovers(tmp_path) == [] and next(iter(_runs(dst)))[1] == "fp16"


def test_a_kill_of_a_first_conversion_leaves_no_output_folder(fixture, tmp_path):
    dst = tmp_path / "conv"
    _kill_at("written-embeddings_qformer", str(fixture.bundle), str(dst))
    assert not dst.exists() and len(_leftovers(tmp_path)) == 1
    convert_smartedit(fixture.bundle, dst)
    assert _leftovers(tmp_path) == [] and len(_runs(dst)) == 1


def test_a_kill_between_the_two_renames_of_the_fallback_swap_is_undone_by_the_next_run(fixture, tmp_path):
    """Without renameat2 the old folder is renamed away first; the next run puts it back before anything else."""
    dst = tmp_path / "conv"
    convert_smartedit(fixture.bundle, dst)
    old = _runs(dst)
    _kill_at("half-swapped", str(fixture.bundle), str(dst), "--dtype", "fp16", no_exchange=True)
    assert not dst.exists()
    notes = remove_stale(dst)
    assert any("restored the previous output" in n for n in notes) and _runs(dst) == old
    assert _leftovers(tmp_path) == []


def test_the_fallback_swap_replaces_the_old_output(fixture, tmp_path, monkeypatch):
    import lmm_edit.loaders.smartedit.staging as staging

    monkeypatch.setattr(staging, "_exchange", lambda a, b: False)
    dst = tmp_path / "conv"
    convert_smartedit(fixture.bundle, dst)
    convert_smartedit(fixture.bundle, dst, "bf16")
    assert next(iter(_runs(dst)))[1] == "bf16" and _leftovers(tmp_path) == []


def test_a_staging_folder_of_a_running_conversion_is_left_alone(fixture, tmp_path):
    busy = tmp_path / ".conv.converting-1"  # pid 1 is always alive
    busy.mkdir()
    result = convert_smartedit(fixture.bundle, tmp_path / "conv")
    assert busy.is_dir() and any(str(busy) in note and "may still be converting" in note for note in result.notes)


def test_a_write_failing_part_way_keeps_the_old_output(fixture, tmp_path, monkeypatch):
    import lmm_edit.loaders.smartedit.convert as convert

    dst = tmp_path / "conv"
    convert_smartedit(fixture.bundle, dst)
    old = _runs(dst)
    real_save, calls = convert.save_file, []

    def fill_the_disk_on_the_third_file(state, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 3:
            with open(filename, "wb") as half:
                half.write(b"\0" * 100)  # part of the file is on disk when the disk fills up
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(state, filename, metadata=metadata)

    monkeypatch.setattr(convert, "save_file", fill_the_disk_on_the_third_file)
    with pytest.raises(ModelFileError) as err:
        convert_smartedit(fixture.bundle, dst, "fp16")
    assert str(dst / "bim.safetensors") in str(err.value) and "full disk" in str(err.value)
    assert "free space" in err.value.fix
    assert _runs(dst) == old and _leftovers(tmp_path) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs: room for the fp16 llm.safetensors (~200 KB) of the fixture, not for the rest."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_gives_a_clear_error_and_leaves_nothing(fixture, tiny_disk):
    dst = tiny_disk / "conv"
    with pytest.raises(ModelFileError) as err:
        convert_smartedit(fixture.bundle, dst, "fp16")
    message = str(err.value)
    assert str(dst) in message and "full disk" in message and "No space left" in message, message
    assert sorted(os.listdir(tiny_disk)) == []


def test_a_read_only_destination_gives_a_clear_error(fixture, tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root: {done.stderr.decode().strip()}")
    try:
        with pytest.raises(ModelFileError) as err:
            convert_smartedit(fixture.bundle, mount / "conv")
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert str(mount / "conv") in str(err.value) and "writable folder" in str(err.value)
    assert "Read-only file system" in err.value.found
