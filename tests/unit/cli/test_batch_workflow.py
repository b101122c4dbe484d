"""Where a batch item's values go in a workflow, and what its results hash covers."""

from __future__ import annotations

import json

import pytest

from lmm_edit.cli.batch.inputs import item_hash
from lmm_edit.cli.batch.manifest import Item
from lmm_edit.cli.batch.workflow import Roles, WorkflowError, apply_item, check_prompt, find_roles, load_workflow


def _api(*nodes) -> dict:
    """API prompt from (class_type, title, inputs) triples, ids "1", "2", ..."""
    return {str(i): {"class_type": kind, "inputs": inputs, "_meta": {"title": title or kind}}
            for i, (kind, title, inputs) in enumerate(nodes, 1)}


USER_GRAPH = _api(
    ("LoadImage", "Input image", {"image": "x.png"}),
    ("LoadImage", "Reference", {"image": "ref.png"}),
    ("CLIPTextEncode", "Instruction", {"text": "", "clip": ["9", 1]}),
    ("KSampler", None, {"seed": 0, "steps": 20}),
    ("SaveImage", None, {"filename_prefix": "out", "images": ["9", 0]}),
    ("LoadImageMask", "Mask", {"image": "m.png", "channel": "alpha"}),
)


def test_ip2p_example_roles_are_its_titled_instruction_and_only_loadimage():
    workflow = load_workflow("instructpix2pix")
    types = {node["id"]: node["type"] for node in workflow.graph["nodes"]}
    titles = {node["id"]: node.get("title") for node in workflow.graph["nodes"]}
    roles = workflow.roles
    assert types[int(roles.image)] == "LoadImage"
    assert titles[int(roles.instruction)] == "Instruction" and types[int(roles.instruction)] == "CLIPTextEncode"
    assert types[int(roles.output)] == "SaveImage"
    assert [types[int(s)] for s in roles.seeds] == ["RandomNoise"] and roles.mask is None


def test_smartedit_example_instruction_goes_to_the_lmm_encode_node():
    workflow = load_workflow("smartedit")
    types = {str(node["id"]): node["type"] for node in workflow.graph["nodes"]}
    assert types[workflow.roles.instruction] == "LMMEdit_LMMEncode"
    assert types[workflow.roles.output] == "SaveImage"  # not the PreviewImage of the edit region


def test_user_api_workflow_roles_come_from_titles(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps(USER_GRAPH))
    assert load_workflow(str(path)).roles == Roles(image="1", instruction="3", output="5", mask="6", seeds=("4",))


def test_missing_title_error_names_the_titles_found():
    graph = _api(("LoadImage", "Photo", {"image": "a"}), ("LoadImage", "Other", {"image": "b"}),
                 ("CLIPTextEncode", "Instruction", {"text": ""}), ("SaveImage", None, {}))
    with pytest.raises(WorkflowError) as caught:
        find_roles(graph)
    message = str(caught.value)
    assert "no node is titled 'Input image'" in message and "2 LoadImage nodes" in message
    assert "'Photo'" in message and "'Other'" in message and "'Instruction'" in message


def test_apply_item_changes_only_the_item_inputs():
    roles = find_roles(USER_GRAPH)
    check_prompt(USER_GRAPH, roles)
    prompt = apply_item(USER_GRAPH, roles, image="in.png", instruction="make it red", mask="mask.png", seed=7,
                        steps=3, output_prefix="batch/item")
    changed = {(node_id, key) for node_id, node in prompt.items() for key, value in node["inputs"].items()
               if USER_GRAPH[node_id]["inputs"][key] != value}
    assert changed == {("1", "image"), ("3", "text"), ("6", "image"), ("4", "seed"), ("4", "steps"),
                       ("5", "filename_prefix")}
    assert prompt["3"]["inputs"]["text"] == "make it red" and prompt["4"]["inputs"]["seed"] == 7
    assert USER_GRAPH["1"]["inputs"]["image"] == "x.png"  # the template is untouched


def test_a_workflow_with_a_mask_node_refuses_an_item_without_mask():
    with pytest.raises(WorkflowError, match="add a 'mask' column"):
        apply_item(USER_GRAPH, find_roles(USER_GRAPH), image="in.png", instruction="x", mask=None, seed=None,
                   steps=None, output_prefix="p")


def test_instruction_node_without_a_text_widget_is_refused():
    graph = _api(("LoadImage", None, {"image": "a"}), ("CLIPTextEncode", "Instruction", {"text": ["7", 0]}),
                 ("SaveImage", None, {}))
    with pytest.raises(WorkflowError, match="no text input named instruction or text or prompt"):
        check_prompt(graph, find_roles(graph))


def test_unknown_workflow_names_the_examples():
    with pytest.raises(WorkflowError, match="instructpix2pix, smartedit"):
        load_workflow("no-such-workflow")


def _item(**changes) -> Item:
    return Item(**{**dict(id="a", image="/x/a.png", instruction="make it red", seed=1, line=1), **changes})


@pytest.mark.parametrize("change", [
    dict(item=dict(seed=2)), dict(item=dict(instruction="make it blue")), dict(item=dict(image="/x/b.png")),
    dict(item=dict(target_caption="a cup")), dict(options=dict(steps=5)), dict(workflow={"other": 1}),
])
def test_result_hash_changes_with_workflow_item_fields_and_options(change):
    base = item_hash({"w": 1}, _item(), dict(steps=4))
    changed = item_hash(change.get("workflow", {"w": 1}), _item(**change.get("item", {})),
                        change.get("options", dict(steps=4)))
    assert changed != base


def test_result_hash_ignores_the_manifest_line_number():
    assert item_hash({"w": 1}, _item(line=1), {}) == item_hash({"w": 1}, _item(line=40), {})
