"""Preserve Background and Edit Region Preview in real ComfyUI, with a mask made by core nodes (any MASK works)."""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

from .conftest import IMAGE_SIZE

BOX = (16, 8, 24, 20)  # x, y, width, height of the painted mask


def _graph(image_name: str) -> dict:
    """source -> ImageInvert (a stand-in edit of the whole picture) -> Preserve Background inside a box mask."""
    width, height = IMAGE_SIZE
    x, y, w, h = BOX
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "ImageScale", "inputs": {"image": ["2", 0], "upscale_method": "area", "width": 32,
                                                     "height": 24, "crop": "disabled"}},
        "4": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": width, "height": height}},
        "5": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": w, "height": h}},
        "6": {"class_type": "MaskComposite", "inputs": {"destination": ["4", 0], "source": ["5", 0], "x": x, "y": y,
                                                        "operation": "add"}},
        "7": {"class_type": "LMMEdit_PreserveBackground", "inputs": {
            "edited": ["3", 0], "source": ["1", 0], "mask": ["6", 0], "feather": 4, "threshold": 0.5,
            "colour_match": "off"}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "test/preserved"}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "test/source"}},
        "10": {"class_type": "LMMEdit_EditRegionPreview", "inputs": {  # output node: runs with nothing connected
            "image": ["1", 0], "mask": ["7", 1], "opacity": 1.0, "colour": "green", "threshold": 0.0, "feather": 0}},
    }


def _saved(comfyui, result, node_id: str) -> np.ndarray:
    (item,) = result.outputs[node_id]["images"]
    folder = pathlib.Path(comfyui.folder_paths.get_directory_by_type(item["type"])) / item["subfolder"]
    return np.asarray(Image.open(folder / item["filename"]).convert("RGB")).astype(np.int16)


def test_a_painted_mask_keeps_the_rest_of_the_picture_and_the_preview_shows_it(comfyui, example_image):
    result = comfyui.run(_graph(example_image.name))
    assert result.success, result.error
    preserved, source = _saved(comfyui, result, "8"), _saved(comfyui, result, "9")
    preview = _saved(comfyui, result, "10")
    x, y, w, h = BOX
    inside = np.zeros(preserved.shape[:2], dtype=bool)
    inside[y:y + h, x:x + w] = True

    assert preserved.shape == source.shape == preview.shape == (IMAGE_SIZE[1], IMAGE_SIZE[0], 3)
    assert np.array_equal(preserved[~inside], source[~inside])
    core = (slice(y + 4, y + h - 4), slice(x + 4, x + w - 4))  # past the 4-px feather: the (inverted) edit
    assert np.abs(preserved[core] - (255 - source[core])).max() <= 40  # the edit went through a 2x downscale
    assert np.array_equal(preview[~inside], source[~inside])
    assert (preview[core][..., 1] == 255).all() and (preview[core][..., [0, 2]] == 0).all()  # opaque green
    assert result.outputs["10"]["images"][0]["type"] == "temp"  # a preview, as core PreviewImage
