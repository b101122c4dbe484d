"""benchmarks/gpu_checks.sh --dry-run: the GPU check script runs end to end without a GPU.

Every step starts (pytest -m gpu on CPU, where its tests skip; each benchmark's entry point with --help) and the
CUDA steps report "skipped: no CUDA" in the summary file, so the script that a scarce GPU machine runs once is
known to start before it gets there.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
CUDA_STEPS = ("attention", "ip2p_step", "smartedit_encode")


def test_gpu_checks_dry_run_starts_every_step_and_writes_the_summary(comfyui, tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, TMPDIR=str(tmp_path))
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_checks.sh"), "--dry-run"], env=env,
                         capture_output=True, text=True, timeout=300)
    summary = (tmp_path / "gpu_checks_summary.txt").read_text()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "GPU: none" in summary and "every step passed" in summary
    assert "pytest_gpu: done" in summary and " deselected" in summary  # the gpu-marked tests were collected
    for name in CUDA_STEPS:
        assert f"{name}: started on CPU; skipped: no CUDA" in summary
        assert "usage:" in (tmp_path / f"{name}.log").read_text()  # its entry point ran (argparse's --help)
