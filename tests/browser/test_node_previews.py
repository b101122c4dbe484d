"""What the pack's nodes show in the real frontend: LMM Encode's answer and token badge, the masks of
SmartEdit BIM Conditioning and Edit Region Preview. Screenshots of each are saved as test artifacts.

Edit Region Preview runs for real on the server (core nodes make its picture and mask). The encode and
BIM nodes need SmartEdit weights, which this server deliberately lacks; their results reach the page the
way a run's results do, as the server's ``executed`` message (the ui dicts tests/integration checks the
nodes really send), dispatched on the frontend's own api object.

Screenshots go to $LMM_EDIT_SCREENSHOTS, else <pytest basetemp>/screenshots.
"""

from __future__ import annotations

import os
import pathlib

import pytest
from PIL import Image

from .conftest import VIEWPORT

pytestmark = pytest.mark.browser

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMAGE_SIZE = (96, 64)  # width, height of the picture the preview graph loads
MASK_FILE = "lmm_edit_bim_mask.png"  # a grey mask picture, as the BIM node's preview
GREEN, AMBER = "#2e7d32", "#ef8f00"  # web/js/lmm_edit.js STATUS_BADGES

# Sends the ui dict of a node run to the page as the server's "executed" message does, then redraws as the
# frontend does on the "executing" message that follows it.
EXECUTED_JS = """({ nodeId, output }) => {
  const detail = { node: String(nodeId), display_node: String(nodeId), output, prompt_id: "browser-test" };
  window.comfyAPI.api.api.dispatchCustomEvent("executed", detail);
  app.graph.setDirtyCanvas(true, false);
}"""

READ_NODE_JS = """(nodeId) => {
  const node = app.graph.getNodeById(nodeId);
  const badges = node.badges.map((badge) => (typeof badge === "function" ? badge() : badge))
    .filter((badge) => badge.text?.startsWith("image tokens"));
  return {
    info: node.widgets?.find((widget) => widget.name === "lmm_edit_info")?.value ?? null,
    badges: badges.map((badge) => ({ text: badge.text, bgColor: badge.bgColor })),
    images: (node.imgs ?? []).map((img) => [img.naturalWidth, img.naturalHeight, img.src]),
  };
}"""

ADD_NODE_JS = """({ type, pos }) => {
  const node = LiteGraph.createNode(type);
  node.pos = pos;
  app.graph.add(node);
  app.canvas.setDirty(true, true);
  return node.id;
}"""


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> pathlib.Path:
    folder = pathlib.Path(os.environ.get("LMM_EDIT_SCREENSHOTS") or tmp_path_factory.getbasetemp() / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _screenshot(page, folder: pathlib.Path, name: str) -> pathlib.Path:
    path = folder / f"{name}.png"
    png = page.screenshot(path=str(path))
    assert png.startswith(PNG_MAGIC) and int.from_bytes(png[16:20], "big") == VIEWPORT["width"]
    print(f"screenshot: {path}")
    return path


def _frames(page, count: int = 2) -> None:
    page.evaluate("(n) => new Promise((resolve) => { const step = (k) => k ? requestAnimationFrame(() => step(k - 1)) "
                  ": resolve(); step(n); })", count)


def _show_node(page, node_id: int) -> None:
    """The node in the middle of the canvas, with no dialog over it (the first-run template browser may open)."""
    if page.locator(".p-dialog").count():
        page.keyboard.press("Escape")
        page.wait_for_function("() => !document.querySelector('.p-dialog')")
    page.evaluate("""(id) => {
      app.canvas.ds.scale = 1.25;
      app.canvas.centerOnNode(app.graph.getNodeById(id));
      app.canvas.setDirty(true, true);
    }""", node_id)
    _frames(page, 4)


def _server_folder(comfy_server, name: str) -> pathlib.Path:
    folder = comfy_server.log_path.parent / name  # --base-directory of the server
    folder.mkdir(exist_ok=True)
    return folder


def test_lmm_encode_shows_its_answer_and_a_token_badge_that_stay_after_reopening(app_page, screenshot_dir):
    page = app_page.page
    node_id = page.evaluate(ADD_NODE_JS, {"type": "LMMEdit_LMMEncode", "pos": [0, 1400]})  # below the default graph
    answer = "OK: the LMM wrote the 32 image tokens in order.\nTemplate 07: ...\nLMM answer: Sure, here is the pear."
    page.evaluate(EXECUTED_JS, {"nodeId": node_id, "output": {"lmm_edit_text": [answer], "lmm_edit_status": ["ok"]}})
    _frames(page)
    shown = page.evaluate(READ_NODE_JS, node_id)
    assert shown["info"] == answer
    assert shown["badges"] == [{"text": "image tokens OK", "bgColor": GREEN}]
    _show_node(page, node_id)
    _screenshot(page, screenshot_dir, "lmm_encode_ok_green_badge")

    forced = "Image tokens forced: ...\nTemplate 07: ...\nLMM answer: I will do it."
    page.evaluate(EXECUTED_JS, {"nodeId": node_id, "output": {"lmm_edit_text": [forced],
                                                              "lmm_edit_status": ["forced"]}})
    _frames(page)
    shown = page.evaluate(READ_NODE_JS, node_id)
    assert shown["info"] == forced
    assert shown["badges"] == [{"text": "image tokens forced", "bgColor": AMBER}]  # one badge, updated

    # Saved and opened again (as a file, or a workflow tab switched back to): the frontend rebuilds the node.
    page.evaluate("async () => { const saved = JSON.parse(JSON.stringify(app.graph.serialize())); "
                  "await app.loadGraphData(saved); }")
    page.wait_for_function("() => app.graph.nodes.some((node) => node.type === 'LMMEdit_LMMEncode')")
    _frames(page)
    reopened_id = page.evaluate("() => app.graph.nodes.find((node) => node.type === 'LMMEdit_LMMEncode').id")
    reopened = page.evaluate(READ_NODE_JS, reopened_id)
    assert reopened["info"] == forced
    assert reopened["badges"] == [{"text": "image tokens forced", "bgColor": AMBER}]
    _show_node(page, reopened_id)
    _screenshot(page, screenshot_dir, "lmm_encode_forced_amber_badge_reopened")
    assert app_page.log.errors_naming_the_pack() == []


def test_bim_node_shows_its_edit_region_mask(app_page, comfy_server, screenshot_dir):
    import numpy as np

    y, x = np.mgrid[0:256, 0:256]
    grey = (255 * np.exp(-((x - 100) ** 2 + (y - 140) ** 2) / 2000.0)).astype(np.uint8)
    Image.fromarray(np.stack([grey] * 3, -1)).save(_server_folder(comfy_server, "temp") / MASK_FILE)
    page = app_page.page
    node_id = page.evaluate(ADD_NODE_JS, {"type": "LMMEdit_BIMConditioning", "pos": [0, 1400]})
    output = {"images": [{"filename": MASK_FILE, "subfolder": "", "type": "temp"}], "animated": [False]}

    page.evaluate(EXECUTED_JS, {"nodeId": node_id, "output": output})
    _show_node(page, node_id)  # the frontend loads a node's preview images when it draws the node
    page.wait_for_function("(id) => app.graph.getNodeById(id).imgs?.[0]?.naturalWidth > 0", arg=node_id)

    (image,) = page.evaluate(READ_NODE_JS, node_id)["images"]
    assert image[:2] == [256, 256] and MASK_FILE in image[2]
    _show_node(page, node_id)
    _screenshot(page, screenshot_dir, "bim_conditioning_edit_region")
    assert app_page.log.errors_naming_the_pack() == []


def _preview_prompt(image_name: str) -> dict:
    width, height = IMAGE_SIZE
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "2": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": width, "height": height}},
        "3": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 40, "height": 24}},
        "4": {"class_type": "MaskComposite", "inputs": {"destination": ["2", 0], "source": ["3", 0], "x": 28, "y": 20,
                                                        "operation": "add"}},
        "5": {"class_type": "LMMEdit_EditRegionPreview", "inputs": {
            "image": ["1", 0], "mask": ["4", 0], "opacity": 0.6, "colour": "red", "threshold": 0.0, "feather": 0}},
    }


def test_edit_region_preview_runs_and_shows_the_mask_over_the_picture(app_page, comfy_server, screenshot_dir):
    import numpy as np

    from lmm_edit.selfcheck.images import write_test_image

    image_name = "lmm_edit_preview_source.png"
    write_test_image(_server_folder(comfy_server, "input") / image_name, *IMAGE_SIZE)
    page = app_page.page
    page.evaluate("(prompt) => app.loadApiJson(prompt, 'edit_region_preview.json')", _preview_prompt(image_name))
    preview_id = page.evaluate("() => app.graph.nodes.find((n) => n.type === 'LMMEdit_EditRegionPreview').id")
    _show_node(page, preview_id)

    with page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST") as answer:
        page.evaluate("() => app.queuePrompt(0)")
    assert answer.value.status == 200, answer.value.text()
    page.wait_for_function("(id) => app.graph.getNodeById(id).imgs?.[0]?.naturalWidth > 0", arg=preview_id,
                           timeout=120_000)

    (image,) = page.evaluate(READ_NODE_JS, preview_id)["images"]
    assert image[:2] == list(IMAGE_SIZE)
    status, _, body = comfy_server.get(image[2][len(comfy_server.url):] if image[2].startswith("http") else image[2])
    assert status == 200
    shown = np.asarray(Image.open(__import__("io").BytesIO(body)).convert("RGB")).astype(int)
    source = np.asarray(Image.open(_server_folder(comfy_server, "input") / image_name).convert("RGB")).astype(int)
    assert np.array_equal(shown[:20], source[:20])  # above the mask: the picture as it is
    assert (shown[30, 40] - source[30, 40])[0] > 0 and shown[30, 40][1] < source[30, 40][1]  # tinted red inside
    _show_node(page, preview_id)
    _screenshot(page, screenshot_dir, "edit_region_preview")
    assert app_page.log.errors_naming_the_pack() == []
