"""ImageBind's vision preprocessing (imagebind/data.py load_and_transform_vision_data) from in-memory pictures.

Reference: the fixture's `imagebind_vision_input_224.png`, the reference's input tensor before Normalize
(un-normalising and rounding it reproduces it exactly), and torchvision's own transforms where installed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lmm_edit.loaders.any2pix.imagebind_vision_input import (
    CLIP_MEAN,
    CLIP_STD,
    resize_and_center_crop,
    to_pil_rgb,
    vision_input,
)


def _reference_normalize(pixels: np.ndarray) -> torch.Tensor:
    """ToTensor + Normalize of [224, 224, 3] uint8, written out from torchvision's definitions."""
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div(255)
    return (x - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)


def _comfy_row(image: Image.Image) -> torch.Tensor:
    """ComfyUI LoadImage: [H, W, C] float32 = uint8 / 255."""
    return torch.from_numpy(np.asarray(image).astype(np.float32) / 255.0)


def test_resize_and_crop_of_the_fixture_image_equals_the_reference_pixels(fixture):
    for path in fixture.images:
        ours = np.asarray(resize_and_center_crop(to_pil_rgb(Image.open(path))))
        ref = fixture.vision_input_pixels()
        err = int(np.abs(ours.astype(int) - ref.astype(int)).max())
        print(f"\n{path.name}: resize + crop vs reference pixels, max abs err {err} (uint8)")
        assert err == 0


def test_vision_input_tensor_equals_the_normalised_reference_pixels(fixture):
    ours = vision_input([Image.open(fixture.images[0])])
    ref = _reference_normalize(fixture.vision_input_pixels())[None]
    print(f"\nvision input [1, 3, 224, 224]: max abs err {float((ours - ref).abs().max()):.1e}")
    assert torch.equal(ours, ref)


def test_comfy_image_row_gives_the_same_input_as_the_png(fixture):
    image = Image.open(fixture.images[0]).convert("RGB")
    assert torch.equal(vision_input([_comfy_row(image)]), vision_input([image]))
    assert torch.equal(vision_input([_comfy_row(image)[None]]), vision_input([image]))  # a batch of one


def test_gray_row_is_converted_like_pil_convert_rgb(fixture):
    gray = Image.open(fixture.images[0]).convert("L")
    row = _comfy_row(gray)[..., None]  # [H, W, 1]
    assert torch.equal(vision_input([row]), vision_input([gray.convert("RGB")]))


def test_rgba_row_drops_alpha_like_pil_convert_rgb(fixture):
    rgba = Image.open(fixture.images[0]).convert("RGBA")
    alpha = np.asarray(rgba).copy()
    alpha[..., 3] = np.arange(alpha.shape[1], dtype=np.uint8)[None, :] * 7  # a non-trivial alpha channel
    rgba = Image.fromarray(alpha)
    assert torch.equal(vision_input([_comfy_row(rgba)]), vision_input([rgba.convert("RGB")]))


@pytest.mark.parametrize("size", [(1, 1), (3, 2), (2, 3), (224, 224), (225, 224), (1000, 37), (37, 1000), (301, 300)])
def test_resize_and_crop_equal_torchvision_for_any_size(size):
    transforms = pytest.importorskip("torchvision.transforms", reason="the reference transforms are torchvision's")
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))
    ref = transforms.Compose([
        transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=CLIP_MEAN, std=CLIP_STD),
    ])(image)
    ours = vision_input([image])[0]
    print(f"\n{size}: vs torchvision max abs err {float((ours - ref).abs().max()):.1e}")
    assert torch.equal(ours, ref)


def test_wrong_row_shape_names_the_expected_layout():
    with pytest.raises(ValueError, match=r"ImageBind \(image input\): the image has 8 channels; expected 1 \(gray\)"):
        vision_input([torch.zeros(3, 8, 8)])
