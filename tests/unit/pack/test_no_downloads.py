"""Nothing in the pack downloads unless the user runs ``python -m lmm_edit download`` (read from the source).

Every transformers/diffusers ``from_pretrained`` call passes ``local_files_only=True``, and the Hub's download
functions are called only from ``cli/hub_download.py``.
"""

from __future__ import annotations

import ast
import pathlib

import lmm_edit

ROOT = pathlib.Path(lmm_edit.__file__).resolve().parent
DOWNLOADERS = {"hf_hub_download", "snapshot_download", "http_get", "load_state_dict_from_url", "download_url_to_file",
               "urlopen", "urlretrieve"}
ONLY_DOWNLOADER = ROOT / "cli" / "hub_download.py"


def pack_sources() -> list[pathlib.Path]:
    skip = {"tests", "benchmarks", ".venv", ".venv-test"}
    return [p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts)]


def calls(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            yield name, node


def test_every_from_pretrained_is_local_files_only():
    offenders = []
    for path in pack_sources():
        for name, node in calls(path):
            if name == "from_pretrained":
                local = [k for k in node.keywords if k.arg == "local_files_only"]
                if not (local and isinstance(local[0].value, ast.Constant) and local[0].value.value is True):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_only_the_download_command_fetches_files():
    found = [f"{path.relative_to(ROOT)}:{node.lineno} {name}" for path in pack_sources() for name, node in calls(path)
             if name in DOWNLOADERS and path != ONLY_DOWNLOADER]
    assert found == []
    assert any(name == "http_get" for name, _ in calls(ONLY_DOWNLOADER))
