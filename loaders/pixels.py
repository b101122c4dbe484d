"""ComfyUI IMAGE tensors <-> PIL, and the one bicubic resize every reference applies to its input.

SmartEdit (TencentARC/SmartEdit ``test/DS_SmartEdit_test.py``) and the transformers image processors resize
8-bit RGB PIL images with bicubic filtering; doing the same here (not ``F.interpolate``) keeps the pixels
the models see identical to the references'.

ComfyUI's IMAGE is ``[B, H, W, C]`` float in 0..1, usually C = 3, but custom nodes also produce gray
(C = 1), gray + alpha (C = 2) and RGBA (C = 4). The encoders and the VAE take RGB: gray is repeated
into three channels, alpha is dropped (as PIL's ``convert("RGB")`` drops it, which the reference's
``Image.open(...).convert("RGB")`` does). An empty image or one holding NaN / inf is refused: the
encoders would otherwise turn it black or white and edit that.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

LATENT_STRIDE = 8  # SD VAE downsampling: edit sizes are multiples of it
GRAY_CHANNELS = (1, 2)  # gray, gray + alpha
RGB_CHANNELS = (3, 4)  # RGB, RGBA


def first_rgb(image: torch.Tensor, node: str) -> torch.Tensor:
    """IMAGE ``[B, H, W, C]`` (or one ``[H, W, C]``) -> its first image ``[1, H, W, 3]`` float, finite.

    Raises ``ValueError`` naming ``node``, the shape found and the fix.
    """
    if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4):
        found = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{node}: the image input must be a ComfyUI IMAGE [B, H, W, C]; found {found}. "
                         "Fix: connect an IMAGE output (e.g. Load Image).")
    batch = image if image.dim() == 4 else image.unsqueeze(0)
    if batch.shape[0] == 0 or batch.shape[1] == 0 or batch.shape[2] == 0:
        raise ValueError(f"{node}: the image input is empty (shape {tuple(batch.shape)}, [B, H, W, C]). "
                         "Fix: check the node before it (a crop or a batch selection left no pixel).")
    channels = batch.shape[3]
    if channels not in GRAY_CHANNELS + RGB_CHANNELS:
        raise ValueError(f"{node}: the image has {channels} channels; expected 1 (gray), 2 (gray + alpha), "
                         "3 (RGB) or 4 (RGBA). Fix: convert it to RGB before this node.")
    first = batch[:1].float()
    bad = int((~first.isfinite()).sum())
    if bad:
        raise ValueError(f"{node}: the image holds {bad} NaN or infinite values (shape {tuple(batch.shape)}). "
                         "Fix: check the node that made it; an image must hold finite values in 0..1.")
    if channels in GRAY_CHANNELS:
        return first[..., :1].repeat(1, 1, 1, 3)
    return first[..., :3]


def to_pil(image: Image.Image | torch.Tensor) -> Image.Image:
    """A PIL RGB image from PIL or from one ComfyUI IMAGE row ``[H, W, 3]`` float in [0, 1] (rounded to 8 bits)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if image.dim() != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected one image [H, W, 3] (ComfyUI IMAGE row), got {tuple(image.shape)}")
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(pixels))


def rgb_pil(image: Image.Image | torch.Tensor, where: str) -> Image.Image:
    """An encoder's image input as 8-bit RGB PIL at its own size: a PIL image, or a ComfyUI IMAGE / IMAGE row
    in any layout ``first_rgb`` takes (its first image; gray and RGBA become RGB; empty or non-finite is refused,
    naming ``where``). The encoder's own resize takes it to the model's size (up from 1x1 too)."""
    if isinstance(image, Image.Image):
        if 0 in image.size:
            raise ValueError(f"{where}: the image is empty ({image.width}x{image.height} px). "
                             "Fix: check the node before it (a crop or a batch selection left no pixel).")
        return image.convert("RGB")
    return to_pil(first_rgb(image, where)[0])


def from_pil(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> ``[H, W, 3]`` float32 in [0, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)


def resize_bicubic(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """One IMAGE row ``[H, W, 3]`` resized to ``width x height`` with PIL bicubic on its 8-bit values."""
    return from_pil(to_pil(image).resize((width, height), resample=Image.Resampling.BICUBIC))


def edit_pixels(image: torch.Tensor, width: int, height: int, node: str = "LMMEdit_BIMConditioning") -> torch.Tensor:
    """IMAGE [B, H, W, C] -> the first image [1, H', W', 3] at the edit size, both sides multiples of 8.

    width/height 0: the source side, centre-cropped down to a multiple of 8 (as core's
    InstructPixToPixConditioning); a source side below 8 px is resized up to 8 instead (a crop would
    start at a negative offset). Otherwise the image is resized with PIL bicubic, as SmartEdit's reference
    resizes its input (``--resize_resolution``, 256), to the requested size floored to 8.
    Gray and RGBA become RGB; an empty or non-finite image is refused (``first_rgb``).
    """
    pixels = first_rgb(image, node)
    h, w = pixels.shape[1:3]
    target_w = max(LATENT_STRIDE, ((width or w) // LATENT_STRIDE) * LATENT_STRIDE)
    target_h = max(LATENT_STRIDE, ((height or h) // LATENT_STRIDE) * LATENT_STRIDE)
    if width or height or h < LATENT_STRIDE or w < LATENT_STRIDE:
        if (target_w, target_h) == (w, h):
            return pixels
        return resize_bicubic(pixels[0], target_w, target_h).unsqueeze(0)
    top, left = (h - target_h) // 2, (w - target_w) // 2
    return pixels[:, top : top + target_h, left : left + target_w]
