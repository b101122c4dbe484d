"""Loading an example workflow with no weights: ComfyUI's frontend lists our files in its missing-models dialog.

The frontend (comfyui-frontend-package 1.27, ``getSelectedModelsMetadata`` and ``MissingModelsWarning``) reads the
loader nodes' ``properties.models`` ({name, url, directory}), asks ``GET /models/<directory>`` which files exist,
and lists each absent one as ``<directory> / <name>``; a URL off huggingface.co/civitai or a name that is not
``.safetensors``/``.sft`` is shown with an error instead of a download. The server of conftest.py has no weights.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from lmm_edit.loaders.model_catalogue import frontend_models

pytestmark = pytest.mark.browser

LOAD_AND_READ_DIALOG_JS = """async (workflow) => {
  await app.loadGraphData(workflow);
  const deadline = Date.now() + 20000;
  let dialog = null;
  while (!dialog && Date.now() < deadline) {
    dialog = [...document.querySelectorAll(".p-dialog")].find((d) => d.querySelector(".comfy-missing-models"));
    if (!dialog) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return dialog ? {
    text: dialog.innerText,
    items: [...dialog.querySelectorAll(".comfy-missing-models li")].map((li) => li.innerText),
  } : null;
}"""


@pytest.mark.parametrize("example", ["smartedit", "ip_adapter_edit"])
def test_loading_an_example_without_weights_lists_its_files_for_download(app_page, example_workflows, example):
    workflow = example_workflows[example]
    expected = [model for node in workflow["nodes"] for model in frontend_models(node)]
    assert expected, f"{example} declares no downloadable model"

    dialog = app_page.page.evaluate(LOAD_AND_READ_DIALOG_JS, workflow)

    assert dialog is not None, "no missing-models dialog appeared"
    assert "Missing Models" in dialog["text"]
    assert len(dialog["items"]) == len({m["url"] for m in expected})
    for model in expected:
        item = next((i for i in dialog["items"] if f"{model['directory']} / {model['name']}" in i), None)
        assert item is not None, (model, dialog["items"])
        assert "not allowed" not in item and "Only allowed suffixes" not in item and "Invalid directory" not in item
    app_page.page.screenshot(path=_screenshot_path(example))
    assert app_page.log.errors_naming_the_pack() == []


def _screenshot_path(example: str) -> str:
    path = Path(tempfile.gettempdir()) / f"lmm_edit_missing_models_{example}.png"
    print(f"screenshot: {path}")
    return str(path)
