"""CI's rule, run on a tiny suite in a fresh pytest: with LMM_EDIT_REQUIRE_ALL=1 only CUDA skips stay skips."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import skip_rule

TINY_SUITE = {
    "test_tiny.py": '''
import pytest

def test_plain():
    pass

def test_needs_comfyui():
    pytest.skip("COMFYUI_PATH is unset: integration tests need a ComfyUI checkout (see README, Tests)")

@pytest.mark.skipif(True, reason="needs a CUDA GPU")
def test_needs_cuda():
    pass
''',
    "test_missing_module.py": '''
import pytest

pytest.importorskip("lmm_edit_no_such_module", reason="playwright is not installed")

def test_never_collected():
    pass
''',
}


def _run_tiny_suite(tmp_path: pathlib.Path, require_all: str | None) -> subprocess.CompletedProcess:
    for name, text in TINY_SUITE.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != skip_rule.REQUIRE_ALL}
    if require_all is not None:
        env[skip_rule.REQUIRE_ALL] = require_all
    env["PYTHONPATH"] = str(pathlib.Path(skip_rule.__file__).parent)
    command = [sys.executable, "-m", "pytest", "-p", "skip_rule", "-p", "no:cacheprovider", "-rA",
               "--continue-on-collection-errors", "--rootdir", str(tmp_path), str(tmp_path)]
    return subprocess.run(command,
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def _summary(done: subprocess.CompletedProcess) -> dict[str, int]:
    last = done.stdout.strip().splitlines()[-1]
    return {word: int(count) for count, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last)}


def test_with_the_variable_a_comfyui_or_missing_module_skip_fails_and_a_cuda_skip_stays(tmp_path):
    done = _run_tiny_suite(tmp_path, "1")
    assert done.returncode == 1, done.stdout[-3000:]
    assert _summary(done) == {"passed": 1, "failed": 1, "skipped": 1, "error": 1}, done.stdout[-3000:]
    assert re.search(r"FAILED .*test_needs_comfyui", done.stdout)
    assert re.search(r"ERROR .*test_missing_module\.py", done.stdout)
    assert re.search(r"SKIPPED .*needs a CUDA GPU", done.stdout)
    assert "only tests that need CUDA may skip" in done.stdout


def test_without_the_variable_every_skip_stays_a_skip(tmp_path):
    for value in (None, "0"):
        done = _run_tiny_suite(tmp_path, value)
        assert done.returncode == 0, done.stdout[-3000:]
        assert _summary(done) == {"passed": 1, "skipped": 3}, done.stdout[-3000:]
