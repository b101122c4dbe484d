"""ComfyUI IMAGE tensors <-> PIL, and the one bicubic resize every reference applies to its input.

SmartEdit (TencentARC/SmartEdit ``test/DS_SmartEdit_test.py``) and the transformers image processors resize
8-bit RGB PIL images with bicubic filtering; doing the same here (not ``F.interpolate``) keeps the pixels
the models see identical to the references'.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

LATENT_STRIDE = 8  # SD VAE downsampling: edit sizes are multiples of it


def to_pil(image: Image.Image | torch.Tensor) -> Image.Image:
    """A PIL RGB image from PIL or from one ComfyUI IMAGE row ``[H, W, 3]`` float in [0, 1] (rounded to 8 bits)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if image.dim() != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected one image [H, W, 3] (ComfyUI IMAGE row), got {tuple(image.shape)}")
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(pixels))


def from_pil(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> ``[H, W, 3]`` float32 in [0, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)


def resize_bicubic(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """One IMAGE row ``[H, W, 3]`` resized to ``width x height`` with PIL bicubic on its 8-bit values."""
    return from_pil(to_pil(image).resize((width, height), resample=Image.Resampling.BICUBIC))


def edit_pixels(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """IMAGE [B, H, W, C] -> the first image [1, H', W', 3] at the edit size, both sides multiples of 8.

    width/height 0: the source side, centre-cropped down to a multiple of 8 (as core's
    InstructPixToPixConditioning). Otherwise the image is resized with PIL bicubic, as SmartEdit's reference
    resizes its input (``--resize_resolution``, 256), to the requested size floored to 8.
    """
    pixels = image[:1, :, :, :3]
    h, w = pixels.shape[1:3]
    target_w = max(LATENT_STRIDE, ((width or w) // LATENT_STRIDE) * LATENT_STRIDE)
    target_h = max(LATENT_STRIDE, ((height or h) // LATENT_STRIDE) * LATENT_STRIDE)
    if width or height:
        if (target_w, target_h) == (w, h):
            return pixels
        return resize_bicubic(pixels[0], target_w, target_h).unsqueeze(0)
    top, left = (h - target_h) // 2, (w - target_w) // 2
    return pixels[:, top : top + target_h, left : left + target_w]
