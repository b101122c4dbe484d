"""The source image as the nodes hand it on: one finite RGB image, whatever ComfyUI's IMAGE held.

ComfyUI's IMAGE is ``[B, H, W, C]`` float in 0..1, usually C = 3, but custom nodes also produce gray
(C = 1), gray + alpha (C = 2) and RGBA (C = 4). The encoders and the VAE take RGB: gray is repeated
into three channels, alpha is dropped (as PIL's ``convert("RGB")`` drops it, which the reference's
``Image.open(...).convert("RGB")`` does). An empty image or one holding NaN / inf is refused: the
encoders would otherwise turn it black or white and edit that. No ComfyUI import here.
"""

from __future__ import annotations

import torch

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
