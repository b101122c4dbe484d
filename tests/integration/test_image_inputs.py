"""Source images as ComfyUI can hand them to the SmartEdit nodes: gray, RGBA, down to 1 x 1; empty or NaN refused.

Before: a gray image reached the VAE and the LMM with one channel, an RGBA image reached the LMM's CLIP
preprocessing with four, an image under 8 px was centre-cropped from a negative offset (a 5 x 3 image came
out 2 x 3, not 8 x 8), and a NaN image was clamped into a black one and edited. After: gray and RGBA become
RGB, small images are resized up to 8 px, and empty or non-finite images stop the node with the shape and the fix.
"""

from __future__ import annotations

import pytest
import torch

from .test_smartedit_nodes import INSTRUCTION, graph, smartedit_files  # noqa: F401  (module fixtures)


def _image(height, width, channels, value=0.25):
    image = torch.full((1, height, width, channels), value)
    if channels >= 3:
        image[..., 0] = 0.75  # red differs from green and blue, so a channel mix-up shows
    return image


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_gray_and_alpha_images_become_rgb(comfyui, channels):
    from lmm_edit.loaders.pixels import first_rgb

    image = _image(5, 7, channels)
    if channels in (2, 4):
        image[..., -1] = 0.0  # a fully transparent alpha must not leak into the colours
    rgb = first_rgb(torch.cat([image, image]), "node")
    assert rgb.shape == (1, 5, 7, 3)
    expected = [0.25, 0.25, 0.25] if channels < 3 else [0.75, 0.25, 0.25]
    assert torch.equal(rgb[0, 0, 0], torch.tensor(expected))


@pytest.mark.parametrize(("size", "request_size", "expected"), [
    ((1, 1), (0, 0), (8, 8)),
    ((3, 5), (0, 0), (8, 8)),
    ((7, 20), (0, 0), (8, 16)),
    ((20, 4), (0, 0), (16, 8)),
    ((1, 1), (64, 48), (48, 64)),
])
def test_edit_pixels_resizes_small_images_up_instead_of_cropping_from_a_negative_offset(comfyui, size, request_size,
                                                                                          expected):
    from lmm_edit.loaders.pixels import edit_pixels

    pixels = edit_pixels(_image(*size, 3), *request_size)
    assert pixels.shape == (1, *expected, 3)
    colour = torch.tensor([0.75, 0.25, 0.25])
    assert torch.allclose(pixels, colour.expand_as(pixels), atol=1 / 255)  # a uniform image stays uniform


def test_edit_pixels_still_centre_crops_sources_of_8_px_and_more(comfyui):
    from lmm_edit.loaders.pixels import edit_pixels

    image = torch.rand(1, 13, 19, 3)
    assert torch.equal(edit_pixels(image, 0, 0), image[:, 2:10, 1:17])


@pytest.mark.parametrize(("image", "message"), [
    (torch.zeros(0, 8, 8, 3), r"the image input is empty \(shape \(0, 8, 8, 3\)"),
    (torch.zeros(1, 0, 8, 3), r"the image input is empty"),
    (torch.zeros(1, 8, 8, 5), r"the image has 5 channels"),
    (torch.full((1, 8, 8, 3), float("nan")), r"holds 192 NaN or infinite values"),
    (torch.tensor([[[[0.5, float("inf"), 0.5]]]]), r"holds 1 NaN or infinite values"),
    (torch.zeros(8, 8), r"must be a ComfyUI IMAGE \[B, H, W, C\]; found \(8, 8\)"),
])
@pytest.mark.parametrize("node", ["LMMEdit_LMMEncode", "LMMEdit_BIMConditioning"])
def test_empty_and_non_finite_images_stop_both_nodes_with_the_fix(graph, node, image, message):  # noqa: F811
    from lmm_edit.nodes.conditioning import BIMConditioningNode
    from lmm_edit.nodes.encode import AUTO_TEMPLATE, LMMEncodeNode

    with pytest.raises(ValueError, match=message) as error:
        if node == "LMMEdit_LMMEncode":
            LMMEncodeNode.execute(graph["lmm"], image, INSTRUCTION, 0, 0.0, AUTO_TEMPLATE, True)
        else:
            BIMConditioningNode.execute(graph["bridge"], graph["instruction"], graph["vae"], image, graph["null_text"])
    assert str(error.value).startswith(node) and "Fix:" in str(error.value)


@pytest.mark.parametrize(("size", "channels"), [((1, 1), 1), ((5, 3), 4), ((2, 9), 2)], ids=["1x1-gray", "5x3-rgba",
                                                                                           "2x9-gray-alpha"])
def test_tiny_gray_and_rgba_images_run_through_the_smartedit_nodes(graph, size, channels):  # noqa: F811
    from lmm_edit.nodes.conditioning import BIMConditioningNode
    from lmm_edit.nodes.encode import AUTO_TEMPLATE, LMMEncodeNode

    image = _image(*size, channels)
    instruction, _ = LMMEncodeNode.execute(graph["lmm"], image, INSTRUCTION, 0, 0.0, AUTO_TEMPLATE, True).result
    assert instruction.hidden_states.isfinite().all()
    positive, _, latent, mask = BIMConditioningNode.execute(graph["bridge"], instruction, graph["vae"], image,
                                                            graph["null_text"]).result
    assert latent["samples"].shape == (1, 4, 1, 1)  # 8 x 8 pixels
    assert mask.shape == (1, 8, 8) and positive[0][0].isfinite().all()
