"""The pack as ComfyUI and the Comfy Registry see it, checked without ComfyUI."""

from __future__ import annotations

import inspect
import json
import os
import pathlib

import pytest
import tomllib

import lmm_edit
from pack_process import run_with_pack

ROOT = pathlib.Path(lmm_edit.__file__).resolve().parent
WORKFLOWS = sorted((ROOT / "example_workflows").glob("*.json"))
COMFYUI_MODULES = ("comfy", "comfy_api", "comfy_extras", "folder_paths", "nodes", "execution")


def test_root_package_exposes_the_v3_entrypoint_and_web_directory():
    assert inspect.iscoroutinefunction(lmm_edit.comfy_entrypoint)
    assert (ROOT / lmm_edit.WEB_DIRECTORY).is_dir()
    # V1 and V3 together would make ComfyUI skip comfy_entrypoint (docs/comfyui.md, Loading).
    assert not hasattr(lmm_edit, "NODE_CLASS_MAPPINGS")


def test_importing_the_pack_and_its_torch_code_imports_no_comfyui():
    """In a fresh interpreter: other suites of the same run may have imported ComfyUI already."""
    done = run_with_pack(
        "import lmm_edit.kernels, lmm_edit.loaders.ip_adapter, lmm_edit.loaders.vlm, lmm_edit.loaders.ip2p.guidance, "
        "lmm_edit.loaders.smartedit, lmm_edit.cli.edit; "
        f"print(sorted(set({COMFYUI_MODULES!r}) & set(sys.modules)))"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_pyproject_declares_the_registry_fields():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["name"] == "lmm-edit"
    assert project["project"]["license"] == {"file": "LICENSE"}
    comfy = project["tool"]["comfy"]
    assert comfy["DisplayName"] == "LMM Edit"
    assert {"PublisherId", "includes", "requires-comfyui"} <= set(comfy)
    # No placeholder URLs: Repository and Icon come with the published repository (README, Publishing).
    assert "Icon" not in comfy and "urls" not in project["project"]
    assert (ROOT / "web" / "icon.png").is_file()
    for requirement in project["project"]["dependencies"]:
        assert "==" not in requirement and "<" not in requirement, f"{requirement}: lower bounds only"


def _package_folders() -> set[str]:
    """Dotted names of the pack's folders with an __init__.py (tests, benchmarks, venvs excluded)."""
    skip = {"tests", "benchmarks", "web", "example_workflows", "locales", "__pycache__"}
    found = set()
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if d not in skip and not d.startswith(".")]
        if "__init__.py" in files:
            found.add(".".join(("lmm_edit", *pathlib.Path(folder).relative_to(ROOT).parts)))
    return found


def test_every_subpackage_is_listed_for_installation():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    missing = _package_folders() - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[w.stem for w in WORKFLOWS])
def test_example_workflow_is_a_consistent_ui_graph(workflow):
    """Links and node sockets agree, as the frontend requires when it loads the file."""
    graph = json.loads(workflow.read_text())
    nodes = {node["id"]: node for node in graph["nodes"]}
    links = {link[0]: link for link in graph["links"]}
    for link_id, src, src_slot, dst, dst_slot, link_type in links.values():
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
        assert link_type == nodes[src]["outputs"][src_slot]["type"] == nodes[dst]["inputs"][dst_slot]["type"]
    for node in nodes.values():
        for socket in node.get("inputs", []):
            assert socket["link"] is None or socket["link"] in links
    assert graph["last_node_id"] >= max(nodes)
    assert graph["last_link_id"] >= max(links, default=0)


def test_every_help_page_belongs_to_a_node_in_the_locale_file():
    node_defs = json.loads((ROOT / "locales" / "en" / "nodeDefs.json").read_text())
    pages = {p.stem for p in (ROOT / "web" / "docs").glob("*.md")}
    assert pages == set(node_defs)
