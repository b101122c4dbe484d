"""LMM Edit in ComfyUI's real frontend (comfyui-frontend-package), driven in headless Chromium.

The page is the one a user opens; graphs are loaded and queued through the frontend's own
``app`` object, as its menus do.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest

from .conftest import PACK_FOLDER, REPO_ROOT, VIEWPORT

pytestmark = pytest.mark.browser

EXTENSION_NAME = "lmm_edit.sockets"  # app.registerExtension({name}) in web/js/lmm_edit.js
EXAMPLE = "instructpix2pix"
IP2P_CHECKPOINT = "instruct-pix2pix-00-22000.safetensors"  # the example's CheckpointLoaderSimple ckpt_name
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# A JS colour entry of TYPE_COLOURS in web/js/lmm_edit.js: `  LMM_EDIT_X: "#rrggbb",`
TYPE_COLOUR_ENTRY = re.compile(r"""^\s*(LMM_EDIT_\w+)\s*:\s*["'](#[0-9a-fA-F]{6})["']""", re.MULTILINE)

# Loads a UI-format workflow with the frontend's own loader and reports what the frontend made of it.
# afterConfigureGraph(missingNodeTypes) is the hook the frontend calls with the list it shows in its
# "missing node types" dialog.
LOAD_GRAPH_JS = """async (workflow) => {
  const seen = { missing: null };
  app.registerExtension({
    name: "lmm_edit.test.missing_nodes_probe",
    afterConfigureGraph(missingNodeTypes) { seen.missing = [...missingNodeTypes]; },
  });
  await app.loadGraphData(workflow);
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  return {
    missing: seen.missing,
    nodes: app.graph.nodes.map((node) => ({
      id: node.id,
      type: node.type,
      registered: node.type in LiteGraph.registered_node_types,
      has_errors: Boolean(node.has_errors),
    })),
    dialogs: [...document.querySelectorAll(".p-dialog")].map((dialog) => dialog.innerText),
  };
}"""


def pack_extension_urls(comfy_server) -> list[str]:
    """Our JS files as the frontend imports them, from GET /extensions."""
    return [url for url in comfy_server.get_json("/extensions")
            if url.startswith((f"/extensions/{PACK_FOLDER}/", "/extensions/lmm-edit/"))]


def load_example(app_page, example_workflows) -> dict:
    return app_page.page.evaluate(LOAD_GRAPH_JS, example_workflows[EXAMPLE])


def test_pack_extension_loads_and_registers_once_without_console_errors(app_page, comfy_server):
    urls = pack_extension_urls(comfy_server)
    assert f"/extensions/{PACK_FOLDER}/js/lmm_edit.js" in urls

    names = app_page.page.evaluate("() => app.extensions.map((extension) => extension.name)")

    assert names.count(EXTENSION_NAME) == 1
    for url in urls:
        assert app_page.log.responses.get(comfy_server.url + url) == 200, url
    assert app_page.log.errors_naming_the_pack() == []


def test_socket_colours_of_the_pack_types_are_set_on_the_canvas(app_page):
    expected = dict(TYPE_COLOUR_ENTRY.findall((REPO_ROOT / "web" / "js" / "lmm_edit.js").read_text()))
    assert expected, "no LMM_EDIT_* colours found in web/js/lmm_edit.js"

    colours = app_page.page.evaluate("""(types) => types.map((type) => [
      app.canvas.default_connection_color_byType[type], LGraphCanvas.link_type_colors[type]])""", list(expected))

    assert colours == [[colour, colour] for colour in expected.values()]


def test_example_workflow_loads_with_every_node_type_known(app_page, example_workflows):
    workflow = example_workflows[EXAMPLE]

    loaded = load_example(app_page, example_workflows)

    assert loaded["missing"] == []
    assert sorted((node["id"], node["type"]) for node in loaded["nodes"]) == sorted(
        (node["id"], node["type"]) for node in workflow["nodes"])
    assert all(node["registered"] and not node["has_errors"] for node in loaded["nodes"]), loaded["nodes"]
    # The only dialog: ComfyUI's missing-models list (no weights on this server; tests/browser/test_missing_models.py).
    assert [text for text in loaded["dialogs"] if "Missing Models" not in text] == []
    assert app_page.log.errors_naming_the_pack() == []

    screenshot = Path(tempfile.gettempdir()) / f"lmm_edit_browser_{EXAMPLE}.png"
    png = app_page.page.screenshot(path=str(screenshot))
    assert png.startswith(PNG_MAGIC)
    assert int.from_bytes(png[16:20], "big") == VIEWPORT["width"]  # IHDR width
    print(f"screenshot: {screenshot}")


def test_queueing_the_example_without_weights_shows_the_missing_checkpoint(app_page, example_workflows):
    widgets = {node["type"]: node.get("widgets_values") for node in example_workflows[EXAMPLE]["nodes"]}
    assert widgets["CheckpointLoaderSimple"] == [IP2P_CHECKPOINT]
    load_example(app_page, example_workflows)
    page = app_page.page

    with page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST") as answer:
        queued = page.evaluate("() => app.queuePrompt(0)")

    assert queued is False
    response = answer.value
    assert response.status == 400
    body = response.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    checkpoint_errors = [error for node in body["node_errors"].values() if node["class_type"] == "CheckpointLoaderSimple"
                         for error in node["errors"]]
    assert [error["extra_info"]["received_value"] for error in checkpoint_errors] == [IP2P_CHECKPOINT]
    # What the user sees: the frontend's error dialog, and the node errors it keeps for the canvas.
    dialog = page.locator(".p-dialog").filter(has_text=IP2P_CHECKPOINT).filter(has_text="ckpt_name")
    dialog.wait_for(state="visible")
    assert "ckpt_name" in dialog.inner_text()
    node_errors = page.evaluate("() => app.lastNodeErrors")
    assert IP2P_CHECKPOINT in json.dumps(node_errors["1"])


def test_text_sent_by_a_pack_node_is_shown_on_it_and_not_saved(app_page):
    # A node's ui {"lmm_edit_text": [...]} arrives as message.lmm_edit_text in onExecuted.
    shown = app_page.page.evaluate("""async () => {
      const node = LiteGraph.createNode("LMMEdit_DualCFGGuider");
      app.graph.add(node);
      node.onExecuted({ lmm_edit_text: ["first line", "second line"] });
      node.onExecuted({ lmm_edit_text: ["replaced"] });
      const infos = node.widgets.filter((w) => w.name === "lmm_edit_info");
      return {
        values: infos.map((w) => w.value),
        readOnly: infos.map((w) => w.inputEl.readOnly),
        saved: node.serialize().widgets_values.filter((v) => v !== undefined && v !== null),
        declared: node.widgets.filter((w) => w.name !== "lmm_edit_info").map((w) => w.value),
        promptInputs: Object.keys((await app.graphToPrompt()).output[node.id].inputs),
      };
    }""")

    assert shown["values"] == ["replaced"]
    assert shown["readOnly"] == [True]
    assert shown["saved"] == shown["declared"]  # the workflow keeps only the node's own widgets
    assert "lmm_edit_info" not in shown["promptInputs"]
    assert app_page.log.errors_naming_the_pack() == []
