"""ImageBind's image preprocessing from in-memory pictures (PIL images or ComfyUI IMAGE rows).

As facebookresearch/ImageBind @ 3fcf5c9039de97f6ff5528ee4a9dce903c5979b3 `imagebind/data.py`
`load_and_transform_vision_data`, which applies torchvision's
`Resize(224, BICUBIC) -> CenterCrop(224) -> ToTensor() -> Normalize(mean, std)` to `Image.open(f).convert("RGB")`.
Written with PIL alone (the pack does not depend on torchvision), step for step as torchvision does it on a PIL
image:

- Resize: the short side becomes 224 and the long side `int(224 * long / short)` (truncated);
  PIL `Image.resize(..., BICUBIC)` (PIL's bicubic with antialiasing); an image already at that size is kept;
- CenterCrop: offsets `int(round((size - 224) / 2))` (Python's round, half to even);
- ToTensor: uint8 / 255 in fp32, [3, 224, 224];
- Normalize: `(x - mean) / std` with CLIP's mean/std.

A ComfyUI IMAGE row [H, W, C] float in 0..1 is turned back into 8-bit pixels with `round(255 x)` (ComfyUI's
LoadImage divides 8-bit pixels by 255, so this recovers them exactly), then handled as the PIL image; one
channel is gray, four channels are RGBA (PIL's RGBA -> RGB conversion drops alpha, as `.convert("RGB")` does
for an RGBA file in the reference). An empty image or one holding NaN / inf is refused (``pixels.first_rgb``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ..pixels import rgb_pil

IMAGE_SIZE = 224  # imagebind/data.py load_and_transform_vision_data: Resize(224), CenterCrop(224)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # imagebind/data.py load_and_transform_vision_data
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)  # imagebind/data.py load_and_transform_vision_data

VISION_INPUT = "InstructAny2Pix ImageBind (image input)"  # how errors name this input

ImageLike = Image.Image | torch.Tensor


def to_pil_rgb(image: ImageLike) -> Image.Image:
    """A PIL image, or an IMAGE row [H, W, C] / IMAGE [B, H, W, C] (its first image; C = 1..4, float 0..1 or
    uint8), as an RGB PIL image. Empty or non-finite images are refused by name (``pixels.rgb_pil``); any size
    down to 1x1 goes on to the resize, which scales it up."""
    if isinstance(image, torch.Tensor) and image.dtype == torch.uint8:
        image = image.float() / 255.0  # 8-bit rows: k / 255 rounds back to k in rgb_pil
    return rgb_pil(image, VISION_INPUT)


def resize_and_center_crop(image: Image.Image) -> Image.Image:
    """torchvision Resize(224, BICUBIC) + CenterCrop(224) on an RGB PIL image -> 224 x 224 RGB."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(IMAGE_SIZE * long / short)
    new_w, new_h = (IMAGE_SIZE, new_long) if w <= h else (new_long, IMAGE_SIZE)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.BICUBIC)
    top = int(round((new_h - IMAGE_SIZE) / 2.0))
    left = int(round((new_w - IMAGE_SIZE) / 2.0))
    return image.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))


def normalize_pixels(image: Image.Image) -> torch.Tensor:
    """224 x 224 RGB PIL image -> ToTensor + Normalize [3, 224, 224] fp32."""
    x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255.0)
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (x - mean) / std


def vision_input(images: Sequence[ImageLike]) -> torch.Tensor:
    """Pictures -> ImageBind's vision input [N, 3, 224, 224] fp32 (CPU)."""
    if len(images) == 0:
        raise ValueError("no image to embed")
    return torch.stack([normalize_pixels(resize_and_center_crop(to_pil_rgb(im))) for im in images])
