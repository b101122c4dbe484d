"""The self-check works from an installed pack, as after ``pip install lmm-edit`` or a registry install.

A wheel is built from a copy of this checkout, installed with ``--no-deps`` into a new environment outside
the checkout whose other packages (torch, transformers, comfy-cli, ...) come from the running one, and
``python -m lmm_edit edit`` runs there with no ``tests/`` anywhere on its path.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import site
import subprocess
import sys
import zipfile

from pack_process import ROOT

NOT_SHIPPED = shutil.ignore_patterns(".git", ".venv*", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache",
                                     ".ruff_cache")


def _run(command, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _build_wheel(work: pathlib.Path) -> pathlib.Path:
    """From a copy: setuptools writes build/ and *.egg-info next to the sources, which must stay clean."""
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SHIPPED, symlinks=True)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", work / "dist", source])
    (wheel,) = (work / "dist").glob("lmm_edit-*.whl")
    return wheel


def _environment(work: pathlib.Path) -> pathlib.Path:
    """A new venv that sees the running environment's packages after its own (a .pth line, which, unlike
    --system-site-packages, reaches the site-packages of a venv rather than of the base Python)."""
    env = work / "env"
    _run([sys.executable, "-m", "venv", env])
    python = env / "bin" / "python"
    own = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    pathlib.Path(own, "running_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def test_the_self_check_runs_from_an_installed_wheel(comfyui, tmp_path):
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "lmm_edit/selfcheck/ip2p_models.py" in names and "lmm_edit/example_workflows/instructpix2pix.json" in names
    assert not [n for n in names if n.startswith(("lmm_edit/tests/", "lmm_edit/benchmarks/"))]

    python = _environment(tmp_path)
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", wheel])
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["COMFYUI_PATH"] = str(comfyui.comfyui_path)
    where = _run([python, "-c", "import importlib.util, lmm_edit; print(lmm_edit.__file__); "
                  "print([m for m in ('pack_process', 'tiny_clip', 'unit') if importlib.util.find_spec(m)])"],
                 cwd=run_dir, env=env).stdout.splitlines()
    assert pathlib.Path(where[0]).is_relative_to(tmp_path / "env"), where
    assert where[1] == "[]", f"test modules importable from the installed pack: {where[1]}"

    done = _run([python, "-m", "lmm_edit", "edit", "--self-check", "--steps", "2", "--output", run_dir / "out"],
                cwd=run_dir, env=env)
    assert "SELF-CHECK PASSED" in done.stdout, done.stdout[-3000:]
    (saved,) = [line.split(" ", 1)[1] for line in done.stdout.splitlines() if line.startswith("saved ")]
    assert pathlib.Path(saved).is_file() and pathlib.Path(saved).is_relative_to(run_dir / "out")
