"""InstructPix2Pix dual classifier-free guidance (Brooks et al., CVPR 2023, Eq. 3).

Three predictions of the same UNet:
    (T, I): instruction text + source image        ("positive")
    (∅, I): null text + source image               ("negative" as wired in ComfyUI)
    (∅, ∅): null text + null image (zero latent)   (derived from "negative")

    eps = eps(∅,∅) + image_cfg * (eps(∅,I) - eps(∅,∅)) + text_cfg * (eps(T,I) - eps(∅,I))

Unlike diffusers' StableDiffusionInstructPix2PixPipeline we apply the formula for
every scale: diffusers disables *all* guidance when image_guidance_scale < 1
(``do_classifier_free_guidance = guidance_scale > 1 and image_guidance_scale >= 1``).
"""

from __future__ import annotations

import torch


def dual_cfg_weights(text_cfg: float, image_cfg: float) -> tuple[float, float, float]:
    """Weights of (eps(T,I), eps(∅,I), eps(∅,∅)) in the guided prediction; they sum to 1."""
    return text_cfg, image_cfg - text_cfg, 1.0 - image_cfg


def dual_cfg(
    pred_text_image: torch.Tensor,
    pred_null_image: torch.Tensor,
    pred_null_null: torch.Tensor,
    text_cfg: float,
    image_cfg: float,
) -> torch.Tensor:
    """InstructPix2Pix Eq. 3 on three predictions of the same shape (eps or denoised)."""
    return (
        pred_null_null
        + image_cfg * (pred_null_image - pred_null_null)
        + text_cfg * (pred_text_image - pred_null_image)
    )
