"""example_workflows/any2pix.json, as the frontend saves it, executes in real ComfyUI on tiny weights: the tiny
InstructAny2Pix release, the tiny SDXL-family checkpoint and the two-view adapter; one image and one sound through
core LoadImage / LoadAudio, the caption into CLIPTextEncode, the inverted LATENT into core KSamplerAdvanced."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from lmm_edit.selfcheck.audio import write_test_sound

from .any2pix_support import EXAMPLE_SOUND, ensure_adapter, ensure_release, ensure_sound

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAST_STEPS = 2  # the example's 25 steps, shortened for CPU
FAST_SIZE = 64  # the example's 1024 px base image, shrunk for CPU


@pytest.fixture(scope="module")
def files(comfyui, sdxl_checkpoint, example_image, tmp_path_factory):
    ensure_release(comfyui, tmp_path_factory)
    ensure_adapter(comfyui, sdxl_checkpoint)
    ensure_sound(comfyui)
    write_test_sound(pathlib.Path(comfyui.folder_paths.get_input_directory()) / "other.wav", seconds=2.0,
                     sample_rate=8000)


def _prompt(comfyui, overrides: dict | None = None) -> dict:
    prompt = comfyui.ui_to_api(json.loads((ROOT / "example_workflows" / "any2pix.json").read_text()))
    for node in prompt.values():
        inputs = node["inputs"]
        if "steps" in inputs:
            inputs["steps"] = FAST_STEPS
        if node["class_type"] == "LMMEdit_Any2PixInvert":
            inputs["size"] = FAST_SIZE
        for (class_type, name), value in (overrides or {}).items():
            if node["class_type"] == class_type:
                inputs[name] = value
    return prompt


def _run(comfyui, overrides: dict | None = None) -> np.ndarray:
    """Runs the example; ComfyUI's cache re-executes only the nodes downstream of what `overrides` changed."""
    result = comfyui.run(_prompt(comfyui, overrides))
    assert result.success, result.error
    (item,) = [i for ui in result.outputs.values() for i in ui.get("images", []) if i["type"] == "output"]
    folder = comfyui.folder_paths.get_directory_by_type(item["type"])
    return np.asarray(Image.open(pathlib.Path(folder) / item["subfolder"] / item["filename"]))


def test_the_example_is_the_reference_setup(comfyui):
    prompt = _prompt(comfyui)
    by_type = {node["class_type"]: node["inputs"] for node in prompt.values()}
    assert by_type["LMMEdit_Any2PixEncode"]["instruction"] == "add [audio1] to [image1]"
    assert by_type["LoadAudio"]["audio"] == EXAMPLE_SOUND
    assert by_type["StringConcatenate"]["string_a"] == "best quality, high quality"
    assert by_type["StringConcatenate"]["delimiter"] == ""
    sampler = by_type["KSamplerAdvanced"]
    assert (sampler["add_noise"], sampler["sampler_name"], sampler["scheduler"], sampler["cfg"]) == (
        "disable", "euler", "ddim_uniform", 10.0)
    assert by_type["LMMEdit_Any2PixFuse"]["preset"] == "reference __call__"
    assert by_type["LMMEdit_Any2PixInvert"]["alpha"] == 0.7


def test_the_example_edits_and_follows_the_instruction_and_the_sound(comfyui, files, example_image):
    comfyui.executor.reset()  # nothing cached from other tests' graphs
    first = _run(comfyui)
    assert first.shape == (FAST_SIZE, FAST_SIZE, 3) and first.std() > 1.0
    source = np.asarray(Image.open(example_image).convert("RGB").resize((FAST_SIZE, FAST_SIZE)))
    assert np.abs(first.astype(float) - source).mean() > 1.0, "the output is the untouched base image"
    other_instruction = _run(comfyui, {("LMMEdit_Any2PixEncode", "instruction"): "put [audio1] into [image1]"})
    other_sound = _run(comfyui, {("LoadAudio", "audio"): "other.wav"})
    for changed in (other_instruction, other_sound):
        assert np.abs(changed.astype(float) - first).max() > 0, "the output ignores the LLM's embedding"
