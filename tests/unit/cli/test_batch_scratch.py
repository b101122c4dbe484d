"""A batch worker killed with SIGKILL cannot remove its scratch folder; the next worker on the machine does."""

import os
import subprocess
import sys

from lmm_edit.cli.batch import worker


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_scratch_folders_of_dead_workers_are_removed_and_live_ones_kept(tmp_path):
    dead = tmp_path / f"{worker.SCRATCH_PREFIX}{_dead_pid()}_abc"
    live = tmp_path / f"{worker.SCRATCH_PREFIX}{os.getppid()}_def"
    own = tmp_path / f"{worker.SCRATCH_PREFIX}{os.getpid()}_ghi"
    unnamed = tmp_path / f"{worker.SCRATCH_PREFIX}xyz"  # not a worker's name: never touched
    for folder in (dead, live, own, unnamed):
        (folder / "models").mkdir(parents=True)
        (folder / "models" / "weights.safetensors").write_bytes(b"0" * 16)

    assert worker.remove_stale_scratch_folders(tmp_path) == [dead]
    assert not dead.exists()
    assert live.is_dir() and own.is_dir() and unnamed.is_dir()


def test_a_new_scratch_folder_is_named_after_its_process(tmp_path, monkeypatch):
    monkeypatch.setattr(worker.tempfile, "tempdir", str(tmp_path))
    folder = worker.make_scratch_folder()
    assert folder.parent == tmp_path and folder.name.startswith(f"{worker.SCRATCH_PREFIX}{os.getpid()}_")
