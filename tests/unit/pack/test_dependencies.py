"""Dependencies say what the pack uses: the imports of every installed module (read with ``ast``) against
pyproject's dependencies and extras, requirements.txt against pyproject, and the extras named in messages."""

from __future__ import annotations

import ast
import pathlib
import re
import sys

import tomllib

import lmm_edit

ROOT = pathlib.Path(lmm_edit.__file__).resolve().parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
# What ComfyUI itself provides: the nodes and commands run inside it.
COMFYUI_MODULES = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "nodes", "execution",
                   "server", "latent_preview", "node_helpers", "utils"}
# In ComfyUI's requirements.txt: tests may use them, runtime code only where it says so when they are missing.
COMFYUI_REQUIREMENTS = {"torchvision", "torchaudio", "spandrel"}  # spandrel: the integration suite's upscale model
DISTRIBUTIONS = {"PIL": "pillow", "comfy_cli": "comfy-cli", "yaml": "pyyaml"}  # import name -> distribution
# Imported only on an optional path, each behind a message naming its extra.
OPTIONAL = {"triton": "triton", "comfy-cli": "cli", "torchmetrics": "metrics", "ray": "scale", "torchaudio": "audio"}
IMPORTING_CALLS = {"import_module", "find_spec", "importorskip"}


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower().replace("_", "-")


def _names(requirements: list[str]) -> set[str]:
    return {_name(r) for r in requirements}


def _package_folder(package: str) -> pathlib.Path:
    return ROOT.joinpath(*package.split(".")[1:])


RUNTIME_MODULES = sorted(path for package in PYPROJECT["tool"]["setuptools"]["packages"]
                         for path in _package_folder(package).glob("*.py"))


def _imported(path: pathlib.Path) -> set[str]:
    """Top-level names of absolute imports, and of string arguments of import_module/find_spec/importorskip."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in IMPORTING_CALLS):
            found.add(node.args[0].value)
    return {name.split(".")[0] for name in found} - set(sys.stdlib_module_names) - {"lmm_edit", "__future__"}


def _third_party(paths, local: set[str] = frozenset()) -> dict[str, list[str]]:
    """distribution name -> files that import it."""
    users: dict[str, list[str]] = {}
    for path in paths:
        for name in _imported(path) - COMFYUI_MODULES - local:
            distribution = DISTRIBUTIONS.get(name, name).lower().replace("_", "-")
            users.setdefault(distribution, []).append(str(path.relative_to(ROOT)))
    return users


def test_every_listed_package_is_a_folder_with_an_init():
    for package in PYPROJECT["tool"]["setuptools"]["packages"]:
        assert (_package_folder(package) / "__init__.py").is_file(), (
            f"{package} in [tool.setuptools] packages of pyproject.toml has no {_package_folder(package)}/__init__.py")


def test_every_runtime_import_is_a_dependency_or_the_extra_of_an_optional_path():
    dependencies = _names(PYPROJECT["project"]["dependencies"])
    for distribution, files in _third_party(RUNTIME_MODULES).items():
        if distribution in OPTIONAL:
            extra = OPTIONAL[distribution]
            assert distribution in _names(EXTRAS[extra]), f"{distribution} (imported by {files}) not in extra {extra}"
            assert distribution not in dependencies, f"{distribution} is optional: keep it out of dependencies"
        elif distribution not in COMFYUI_REQUIREMENTS:
            assert distribution in dependencies, f"{files} import {distribution}: add it to pyproject's dependencies"


def test_every_dependency_is_imported_by_runtime_code():
    unused = _names(PYPROJECT["project"]["dependencies"]) - set(_third_party(RUNTIME_MODULES))
    assert not unused, f"{sorted(unused)}: no runtime module imports them; move them to an extra (test?)"


def test_every_test_import_is_declared_for_the_tests():
    tests = ROOT / "tests"
    local = {path.stem for path in tests.rglob("*.py")} | {path.name for path in tests.iterdir() if path.is_dir()}
    declared = _names(PYPROJECT["project"]["dependencies"] + EXTRAS["test"] + EXTRAS["browser"] + EXTRAS["scale"]
                      + EXTRAS["cli"]) | {"pytest"} | COMFYUI_REQUIREMENTS
    for distribution, files in _third_party(sorted(tests.rglob("*.py")), local).items():
        assert distribution in declared, f"{files} import {distribution}: add it to the test extra"


def test_requirements_txt_is_the_dependencies_less_torch():
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    requirements = [line for line in lines if line and not line.startswith("#")]
    expected = [r for r in PYPROJECT["project"]["dependencies"] if _name(r) != "torch"]
    assert requirements == expected, "requirements.txt must list pyproject's dependencies less torch, in order"


def test_dev_holds_every_extra():
    others = set().union(*(_names(v) for k, v in EXTRAS.items() if k not in ("dev", "audio")))
    assert others <= _names(EXTRAS["dev"]), f"add {sorted(others - _names(EXTRAS['dev']))} to the dev extra"


def test_every_extra_named_in_a_message_exists():
    named = {(str(path.relative_to(ROOT)), extra.strip()) for path in RUNTIME_MODULES
             for extras in re.findall(r"lmm-edit\[([^\]]*)\]", path.read_text()) for extra in extras.split(",")}
    assert {extra for _, extra in named} >= {"triton", "scale", "metrics"}, named  # the hints that exist today
    unknown = {(path, extra) for path, extra in named if extra not in EXTRAS}
    assert not unknown, f"messages name lmm-edit[extra] for extras pyproject lacks: {sorted(unknown)}"
