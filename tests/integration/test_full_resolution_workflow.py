"""example_workflows/smartedit_full_resolution.json in real ComfyUI, on tiny SmartEdit weights and a large
non-square picture: the output has the input's size and differs from it only inside the blend mask.

Extra nodes are added to the converted prompt to look inside: SaveImage of the loaded source (the same
PNG round trip as the output), of the upscaled raw edit, and of the blend mask (MaskToImage).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from .test_smartedit_nodes import smartedit_files  # noqa: F401  (module fixture: tiny release files in models/)

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKFLOW = "smartedit_full_resolution.json"
LARGE_SIZE = (1024, 640)  # width, height: 4x and 2.5x the model's 256 px, non-square
LARGE_IMAGE = "large_source.png"
FAST_STEPS = 2
MODEL_SIZE = 256  # SmartEdit's training size: the downscale node's width and height
UPSCALE_MODEL = "tiny_compact_x2.safetensors"


@pytest.fixture(scope="module")
def large_image(comfyui) -> pathlib.Path:
    from lmm_edit.selfcheck.images import write_test_image

    return write_test_image(pathlib.Path(comfyui.folder_paths.get_input_directory()) / LARGE_IMAGE, *LARGE_SIZE)


@pytest.fixture(scope="module")
def upscale_model(comfyui) -> str:
    """A 2x Real-ESRGAN-Compact network (spandrel's class, random weights) in models/upscale_models."""
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact

    folder = comfyui.models_path / "upscale_models"
    folder.mkdir(exist_ok=True)
    torch.manual_seed(0)
    network = Compact(num_feat=8, num_conv=1, upscale=2)
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(folder / UPSCALE_MODEL))
    comfyui.folder_paths.add_model_folder_path("upscale_models", str(folder), is_default=True)
    return UPSCALE_MODEL


def _workflow(use_upscale_model: str | None = None) -> dict:
    workflow = json.loads((ROOT / "example_workflows" / WORKFLOW).read_text())
    if use_upscale_model:
        for node in workflow["nodes"]:
            if node["type"] in ("UpscaleModelLoader", "ImageUpscaleWithModel"):
                node["mode"] = 0  # what Ctrl+B (bypass off) does in the frontend
            if node["type"] == "UpscaleModelLoader":
                node["widgets_values"] = [use_upscale_model]
    return workflow


def _ids(prompt: dict) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {}
    for node_id, node in prompt.items():
        ids.setdefault(node["class_type"], []).append(node_id)
    return ids


def _instrumented(comfyui, workflow: dict) -> tuple[dict, dict[str, list[str]]]:
    prompt = comfyui.ui_to_api(workflow)
    ids = _ids(prompt)
    for node in prompt.values():
        if node["class_type"] == "LoadImage":
            node["inputs"]["image"] = LARGE_IMAGE
        if node["class_type"] == "BasicScheduler":
            node["inputs"]["steps"] = FAST_STEPS
    preserve = ids["LMMEdit_PreserveBackground"][0]
    upscaled = prompt[preserve]["inputs"]["edited"]
    source = prompt[preserve]["inputs"]["source"]
    prompt["901"] = {"class_type": "SaveImage", "inputs": {"images": source, "filename_prefix": "test/source"}}
    prompt["902"] = {"class_type": "SaveImage", "inputs": {"images": upscaled, "filename_prefix": "test/raw_edit"}}
    prompt["903"] = {"class_type": "MaskToImage", "inputs": {"mask": [preserve, 1]}}
    prompt["904"] = {"class_type": "SaveImage", "inputs": {"images": ["903", 0], "filename_prefix": "test/blend"}}
    return prompt, ids


def _images(comfyui, result, node_id: str) -> list[np.ndarray]:
    out = []
    for item in result.outputs[node_id]["images"]:
        folder = pathlib.Path(comfyui.folder_paths.get_directory_by_type(item["type"])) / item["subfolder"]
        out.append(np.asarray(Image.open(folder / item["filename"]).convert("RGB")).astype(np.int16))
    return out


def test_full_resolution_example_converts_to_downscale_edit_upscale_composite(comfyui):
    prompt = comfyui.ui_to_api(_workflow())
    ids = _ids(prompt)
    scales = {prompt[i]["inputs"]["width"] == MODEL_SIZE: i for i in ids["ImageScale"]}
    down, up = prompt[scales[True]]["inputs"], prompt[scales[False]]["inputs"]
    size = ids["GetImageSize"][0]
    bim = ids["LMMEdit_BIMConditioning"][0]
    preserve = prompt[ids["LMMEdit_PreserveBackground"][0]]["inputs"]

    assert (down["width"], down["height"]) == (MODEL_SIZE, MODEL_SIZE)
    assert prompt[bim]["inputs"]["image"] == [scales[True], 0]  # SmartEdit edits the downscaled copy
    assert (up["width"], up["height"]) == ([size, 0], [size, 1])  # the edit comes back at the source's size
    assert preserve["edited"] == [scales[False], 0]
    assert preserve["mask"] == [bim, 3]  # the BIM edit_region
    assert preserve["source"] == prompt[size]["inputs"]["image"] == down["image"]  # the full-size original
    assert (preserve["feather"], preserve["threshold"]) == (16, 0.5)
    # the upscale-model path is bypassed until the user has a model: it is not in the prompt
    assert "UpscaleModelLoader" not in ids and "ImageUpscaleWithModel" not in ids


def _run(comfyui, workflow: dict):
    prompt, ids = _instrumented(comfyui, workflow)
    comfyui.executor.reset()
    result = comfyui.run(prompt)
    assert result.success, result.error
    return result, ids


@pytest.fixture(scope="module")
def default_run(comfyui, smartedit_files, ip2p_checkpoint, large_image):  # noqa: F811
    """The example as shipped (core upscale), run once for the tests below."""
    return _run(comfyui, _workflow())


def test_output_has_the_input_size_and_changes_only_inside_the_blend_mask(comfyui, default_run):
    result, ids = default_run
    width, height = LARGE_SIZE
    (output,) = _images(comfyui, result, ids["SaveImage"][0])
    (source,) = _images(comfyui, result, "901")
    (raw,) = _images(comfyui, result, "902")
    (blend,) = _images(comfyui, result, "904")
    assert output.shape == source.shape == raw.shape == (height, width, 3)

    outside = blend[..., 0] == 0  # threshold 0.5 and feather 16: every non-zero weight is >= 1/16
    assert 0.0 < outside.mean() < 1.0, "the tiny BIM's thresholded region should cover part of the picture"
    assert np.array_equal(output[outside], source[outside])
    inside = blend[..., 0] == 255
    assert np.abs(output[inside] - source[inside]).mean() > 1.0, "the edit did not reach the masked region"
    assert np.abs(raw[outside] - source[outside]).mean() > 1.0, "the raw edit already equalled the source"


def test_bim_and_preview_nodes_show_their_masks_and_encode_shows_its_token_status(comfyui, default_run):
    from lmm_edit.nodes.token_status import TOKEN_STATUSES, UI_STATUS_KEY

    result, ids = default_run
    (bim_mask,) = _images(comfyui, result, ids["LMMEdit_BIMConditioning"][0])
    (overlay,) = _images(comfyui, result, ids["LMMEdit_EditRegionPreview"][0])
    assert bim_mask.shape == (MODEL_SIZE, MODEL_SIZE, 3)  # the edit_region at the edit size, grey
    assert np.array_equal(bim_mask[..., 0], bim_mask[..., 2]) and bim_mask.max() > 200  # grey; max-normalised
    assert overlay.shape == (LARGE_SIZE[1], LARGE_SIZE[0], 3)
    encode_ui = result.outputs[ids["LMMEdit_LMMEncode"][0]]
    assert encode_ui[UI_STATUS_KEY][0] in TOKEN_STATUSES
    assert encode_ui["lmm_edit_text"][0].startswith(("OK", "WARNING", "Image tokens forced"))


def test_the_upscale_model_path_runs_when_a_model_is_present(
        comfyui, smartedit_files, ip2p_checkpoint, large_image, upscale_model):  # noqa: F811
    result, ids = _run(comfyui, _workflow(use_upscale_model=upscale_model))
    assert "ImageUpscaleWithModel" in ids
    (output,) = _images(comfyui, result, ids["SaveImage"][0])
    (source,) = _images(comfyui, result, "901")
    (blend,) = _images(comfyui, result, "904")
    assert output.shape == (LARGE_SIZE[1], LARGE_SIZE[0], 3)
    outside = blend[..., 0] == 0
    assert np.array_equal(output[outside], source[outside])
