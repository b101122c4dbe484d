"""Embedding arithmetic of the InstructAny2Pix pipeline: input renormalisation and the fusion.

Reference: jacklishufan/InstructAny2Pix @ d11e49b, `instructany2pix/pipeline.py`:
- `forward_llm`: `aux_info = aux_info / (aux_info.norm(dim=-1, keepdim=True) + 1e-9) * 20`;
- `__call__`: `latent_la = base_embed * h[0] + image_embeds * h[1] + y[0] / y[0].norm() * 20.0 * h[2]`, then
  `latent_la / latent_la.norm() * norm` (norms over the whole tensor, batch 1; fixture README quirk 14); `y` is
  `generate_diffusion`'s return tuple, so `y[0]` is the refined embedding [1, 1, D];
  `image_embeds` enters raw (not renormalised, quirk 6); the prior is fed `image_embeds / |image_embeds| * 100`.
Defaults of `__call__` vs the Gradio demo (`serve.py` sliders) are the two presets below.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

INPUT_NORM = 20.0  # forward_llm: every ImageBind embedding is rescaled to norm 20
INPUT_EPS = 1e-9
PRIOR_INPUT_NORM = 100.0  # __call__: generate_diffusion(..., image_embeds / image_embeds.norm() * 100, ...)
PRIOR_OUTPUT_NORM = 20.0  # __call__: y[0] / y[0].norm() * 20.0


@dataclass(frozen=True)
class FusionSettings:
    h: tuple[float, float, float]  # weights of base_embed, the LLM output embedding, the refined embedding
    norm: float  # norm of the fused embedding
    alpha: float  # inversion/noise mix (inversion.polar_interpolate)
    num_inference_steps: int
    cfg: float
    refinement: float  # SDXL refiner strength (0: off)


# InstructAny2PixPipeline.__call__ defaults
REFERENCE = FusionSettings(h=(0.0, 0.4, 1.0), norm=20.0, alpha=0.7, num_inference_steps=25, cfg=10.0, refinement=0.5)
# serve.py slider defaults (its example row): alpha 1.0, h 0.4/0.6/0.4, norm 20, steps 25, cfg 10, refinement 0.3;
# the demo also generates with the DDIM scheduler instead of Euler
DEMO = FusionSettings(h=(0.4, 0.6, 0.4), norm=20.0, alpha=1.0, num_inference_steps=25, cfg=10.0, refinement=0.3)
PRESETS = {"reference": REFERENCE, "demo": DEMO}


def renormalize_inputs(embeddings: torch.Tensor, norm: float = INPUT_NORM) -> torch.Tensor:
    """[N, D] -> each row rescaled to `norm`: x / (|x| + 1e-9) * norm (forward_llm's `aux_info`)."""
    return embeddings / (embeddings.norm(dim=-1, keepdim=True) + INPUT_EPS) * norm


def prior_input(image_embeds: torch.Tensor) -> torch.Tensor:
    """The prior's `src`: the LLM output embedding rescaled to norm 100 (whole-tensor norm)."""
    return image_embeds / image_embeds.norm() * PRIOR_INPUT_NORM


def fuse(base_embed: torch.Tensor, image_embeds: torch.Tensor, y: torch.Tensor,
         h: tuple[float, float, float] = REFERENCE.h, norm: float = REFERENCE.norm) -> torch.Tensor:
    """The fused embedding `latent_la` [1, 1, D].

    base_embed [D] or [1, D]; image_embeds [1, 1, D] (raw predictor output); y [1, 1, D] (prior output,
    the reference's `y[0]`).
    """
    latent = base_embed * h[0] + image_embeds * h[1] + y / y.norm() * PRIOR_OUTPUT_NORM * h[2]
    return latent / latent.norm() * norm
