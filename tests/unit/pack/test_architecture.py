"""The repository's layout keeps its promises (README, "Architecture"), checked without ComfyUI."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest
import tomllib

import lmm_edit

ROOT = pathlib.Path(lmm_edit.__file__).resolve().parent
COMFYUI_MODULES = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "nodes", "execution", "latent_preview",
                   "server", "node_helpers"}
FAMILIES = {  # loaders/<family>/: the files every family has (model modules besides)
    "smartedit": {"files.py", "load.py", "encoder.py"},
    "vlm": {"load.py", "encoder.py"},  # transformers reads the model folder itself (families.py reads config.json)
    "ip_adapter": {"files.py", "load.py"},  # an image branch: no instruction encoder
}


def _packaged_names() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


@pytest.mark.parametrize("package", _packaged_names())
def test_every_packaged_name_is_a_folder_of_real_code(package):
    folder = ROOT.joinpath(*package.split(".")[1:])
    assert (folder / "__init__.py").is_file(), f"{package}: no {folder}/__init__.py"
    code = [p for p in folder.glob("*.py") if any(
        isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Assign, ast.ImportFrom))
        for node in ast.parse(p.read_text()).body)]
    assert code, f"{package} holds no code"


def test_every_code_folder_is_packaged():
    packaged = {name.split(".", 1)[1] if "." in name else "" for name in _packaged_names()}
    for init in ROOT.glob("**/__init__.py"):
        relative = init.parent.relative_to(ROOT)
        if relative.parts and relative.parts[0] in ("tests", "benchmarks", "scripts", "web", ".git"):
            continue
        assert ".".join(relative.parts) in packaged, f"{relative} has code but is not in pyproject packages"


@pytest.mark.parametrize("top", ["loaders", "kernels"])
def test_torch_code_imports_no_comfyui_module(top):
    for path in (ROOT / top).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in COMFYUI_MODULES, f"{path.relative_to(ROOT)} imports {name}"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_model_family_has_the_same_inner_shape(family):
    present = {p.name for p in (ROOT / "loaders" / family).glob("*.py")}
    assert FAMILIES[family] <= present, f"loaders/{family} lacks {sorted(FAMILIES[family] - present)}"


def test_no_comment_or_doc_cites_a_file_outside_the_repository():
    outside = re.compile(r"DESIGN\.md|(?<![\w/])research/\w+\.md|\.\./shared/(?!fixtures)")
    for path in ROOT.rglob("*"):
        if path.suffix not in (".py", ".md", ".js", ".toml", ".sh") or ".git" in path.parts:
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            assert not outside.search(line), f"{path.relative_to(ROOT)}:{number} cites a file outside the repo"
