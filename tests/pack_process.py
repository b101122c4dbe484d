"""Run Python code in a fresh interpreter with this checkout imported as the package ``lmm_edit``."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
_ALIAS = (
    "import importlib.util, sys; root = sys.argv[1]; "
    "spec = importlib.util.spec_from_file_location('lmm_edit', root + '/__init__.py', "
    "submodule_search_locations=[root]); m = importlib.util.module_from_spec(spec); "
    "sys.modules['lmm_edit'] = m; spec.loader.exec_module(m); sys.argv = sys.argv[1:]; "
)


def run_with_pack(code: str, *args: str, cwd: pathlib.Path | None = None, env: dict | None = None,
                  timeout: float = 600) -> subprocess.CompletedProcess:
    """``code`` runs after the alias; ``sys.argv[1:]`` holds ``args``. Never cwd = the checkout (its ``nodes/``
    would shadow ComfyUI's ``nodes`` module)."""
    return subprocess.run([sys.executable, "-c", _ALIAS + code, str(ROOT), *args], cwd=cwd or ROOT.parent,
                          env=env, capture_output=True, text=True, timeout=timeout)


def start_with_pack(code: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    """``run_with_pack`` without waiting: the process, its stdout and stderr as text pipes."""
    return subprocess.Popen([sys.executable, "-c", _ALIAS + code, str(ROOT), *args], cwd=ROOT.parent, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
