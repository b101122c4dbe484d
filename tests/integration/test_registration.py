"""The pack loads into real ComfyUI and every node it declares is registered and documented."""

from __future__ import annotations

import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "example_workflows").glob("*.json"))


def test_pack_loads_through_the_v3_entrypoint(comfyui):
    assert comfyui.pack_loaded
    assert comfyui.pack_node_ids, "comfy_entrypoint registered no node"


def test_every_declared_node_is_registered_under_its_id(comfyui):
    from lmm_edit.nodes import all_nodes  # noqa: F401  (imports ComfyUI: integration only)

    declared = {cls.define_schema().node_id for cls in all_nodes()}
    assert declared == set(comfyui.pack_node_ids)
    assert all(node_id.startswith("LMMEdit_") for node_id in declared)


def test_every_node_has_a_category_tooltips_help_page_and_locale(comfyui):
    node_defs = json.loads((ROOT / "locales" / "en" / "nodeDefs.json").read_text())
    for node_id in comfyui.pack_node_ids:
        info = comfyui.node_info(node_id)
        assert info["category"].startswith("lmm_edit/"), node_id
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert (ROOT / "web" / "docs" / f"{node_id}.md").is_file(), f"web/docs/{node_id}.md is missing"
        assert node_id in node_defs, f"locales/en/nodeDefs.json lacks {node_id}"
        assert set(node_defs[node_id]["inputs"]) == set(info["input_order"].get("required", [])) | set(
            info["input_order"].get("optional", [])
        ), f"locale inputs of {node_id} differ from the node's"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[w.stem for w in WORKFLOWS])
def test_every_node_type_of_every_example_workflow_exists(comfyui, workflow):
    graph = json.loads(workflow.read_text())
    missing = {node["type"] for node in graph["nodes"]} - set(comfyui.nodes.NODE_CLASS_MAPPINGS)
    assert not missing, f"{workflow.name} uses unknown node types {missing}"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[w.stem for w in WORKFLOWS])
def test_every_example_workflow_has_a_thumbnail(workflow):
    assert workflow.with_suffix(".jpg").is_file(), f"{workflow.stem}.jpg (template thumbnail) is missing"


def test_locale_file_matches_the_node_schemas(comfyui):
    from lmm_edit.cli.locales import LOCALE_FILE, node_defs_from_info

    expected = node_defs_from_info({node_id: comfyui.node_info(node_id) for node_id in comfyui.pack_node_ids})
    assert json.loads(LOCALE_FILE.read_text()) == expected, (
        "locales/en/nodeDefs.json is stale: run `python -m lmm_edit locales` with COMFYUI_PATH set"
    )
