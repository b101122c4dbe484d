"""The prior's inference call: `InstructAny2PixPrior.generate_diffusion` with the pipeline's arguments.

Reference: jacklishufan/InstructAny2Pix @ d11e49b, `instructany2pix/prior/model.py` `generate_diffusion`,
`get_eps`, called by `pipeline.py` `__call__` as `generate_diffusion(MODALITY.VIDEO, MODALITY.IMAGE,
image_embeds / |image_embeds| * 100, no_diffusion=True, num_inference_steps=25, guidance_scale=10,
force_guidence_t0=True, do_classifier_free_guidance=True, score=6.5)`; the DDPM step is diffusers 0.26.3
`DDPMScheduler.step` (variance "fixed_small", prediction "epsilon", no clipping) on the SDXL schedule.

What it computes (fixture README quirks 1, 2, 4): `no_diffusion` forces one step at t = 1 (leading spacing,
steps_offset 1). The "noisy input" is `torch.randn(1, 1, E)` cast to int64 (the dtype of `src_type`:
truncation to -2..2). GPT-2's output x0 (cond row: the embedding and score 6.5; uncond row: zeros and the
constant 2.0) is turned into eps = (noisy - sqrt(a_1) x0) / sqrt(1 - a_1), guided as eps_u + 10 (eps_c - eps_u),
and one DDPM step maps it back: with a single step alpha_prev = 1, so the step returns
(noisy - sqrt(1 - a_1) eps) / sqrt(a_1) = x0_u + 10 (x0_c - x0_u) up to float error, plus sqrt(1e-20) = 1e-10
times a fresh N(0, 1) draw (the clamped variance). The prior is therefore a single-step regressor with CFG 10
on its output.

`mode="reference"` reproduces that arithmetic, including both RNG draws (in the reference's order, from
`generator`, or from torch's global RNG like the reference when None). `mode="direct"` computes the same
value as x0_u + g (x0_c - x0_u) without the round trip, the int64 noise and the RNG draws (it differs from the
reference by float rounding only, about 1e-5 at norm 20 with g = 10).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .prior import MODALITY_VIDEO, Any2PixPrior, score_embedding
from .schedule import SDXL_SCHEDULER, alphas_cumprod, leading_timesteps, scheduler_value

DEFAULT_SCORE = 6.5  # pipeline.py __call__: score=6.5
DEFAULT_NEGATIVE_SCORE = 2.0  # generate_diffusion default negative_score
DEFAULT_GUIDANCE = 10.0  # pipeline.py __call__: guidance_scale=10
DDPM_MIN_VARIANCE = 1e-20  # DDPMScheduler._get_variance: torch.clamp(variance, min=1e-20)
MODES = ("reference", "direct")


@dataclass
class PriorResult:
    y: torch.Tensor  # [1, 1, E] refined embedding (generate_diffusion's first return value)
    inputs_embeds: torch.Tensor  # [2, L, E] GPT-2 inputs, cond row first
    x0: torch.Tensor  # [2, 1, E] GPT-2 last position, cond row first
    noisy_input: torch.Tensor | None  # [1, 1, E] int64 (reference mode)
    eps: torch.Tensor | None  # [2, 1, E] (reference mode)
    eps_guided: torch.Tensor | None  # [1, 1, E] (reference mode)
    timestep: int


def conditioning(src: torch.Tensor, text_states: torch.Tensor, score: float, negative_score: float) -> dict:
    """cond_dict after CFG duplication (cond row first): src_type, imagebind, crossattn_clip, score.

    src [1, 1, D] (norm 100); text_states [1, T, W] (CLIP states of "").
    """
    device, dtype = src.device, src.dtype
    score_row = score_embedding(torch.tensor([score], device=device, dtype=dtype)).to(dtype).view(1, 1, -1)
    return {
        "src_type": torch.full((2, 1), MODALITY_VIDEO, dtype=torch.long, device=device),
        "imagebind": torch.cat([src, src * 0.0], dim=0),
        "crossattn_clip": text_states.expand(2, -1, -1),
        "score": torch.cat([score_row, score_row * 0.0 + negative_score], dim=0),
    }


def ddpm_single_step(
    eps: torch.Tensor, t: int, sample: torch.Tensor, acp: torch.Tensor, num_train: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """`DDPMScheduler.step(eps, t, sample)` after `set_timesteps(1)` (prev_t = t - num_train < 0: alpha_prev = 1)."""
    one = torch.tensor(1.0)
    prev_t = t - num_train // 1
    alpha_prod_t = acp[t]
    alpha_prod_t_prev = acp[prev_t] if prev_t >= 0 else one
    beta_prod_t = 1 - alpha_prod_t
    beta_prod_t_prev = 1 - alpha_prod_t_prev
    current_alpha_t = alpha_prod_t / alpha_prod_t_prev
    current_beta_t = 1 - current_alpha_t
    pred_original = (sample - beta_prod_t ** (0.5) * eps) / alpha_prod_t ** (0.5)
    original_coeff = (alpha_prod_t_prev ** (0.5) * current_beta_t) / beta_prod_t
    current_coeff = current_alpha_t ** (0.5) * beta_prod_t_prev / beta_prod_t
    prev = original_coeff * pred_original + current_coeff * sample
    if t > 0:
        # drawn on CPU like the reference (which runs the prior on CPU), so a CPU generator drives both draws
        noise = torch.randn(eps.shape, generator=generator, dtype=eps.dtype).to(eps.device)
        variance = (1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * current_beta_t
        prev = prev + torch.clamp(variance, min=DDPM_MIN_VARIANCE) ** 0.5 * noise
    return prev


@torch.no_grad()
def refine(
    prior: Any2PixPrior, src: torch.Tensor, text_states: torch.Tensor, score: float = DEFAULT_SCORE,
    negative_score: float = DEFAULT_NEGATIVE_SCORE, guidance: float = DEFAULT_GUIDANCE, mode: str = "reference",
    generator: torch.Generator | None = None, noisy_input: torch.Tensor | None = None,
    scheduler_config: dict = SDXL_SCHEDULER,
) -> PriorResult:
    """y = the prior's refinement of `src` [1, 1, D] (the LLM output embedding at norm 100).

    noisy_input: the int64 [1, 1, E] start to use instead of drawing one (reference mode; e.g. a stored one).
    """
    if mode not in MODES:
        raise ValueError(f"prior mode must be one of {MODES}, not {mode!r}")
    cond = conditioning(src, text_states.to(src.dtype), score, negative_score)
    inputs_embeds = prior.sequence(cond)
    x0 = prior.predict_x0(inputs_embeds)
    t = leading_timesteps(1, scheduler_config)[0]
    if mode == "direct":
        x0_c, x0_u = x0.chunk(2)
        return PriorResult(x0_u + guidance * (x0_c - x0_u), inputs_embeds, x0, None, None, None, t)
    if noisy_input is None:
        # generate_diffusion: torch.randn(raw_bs, 1, embed_dim).to(device).to(src_type) -> int64 (quirk 2)
        noisy_input = torch.randn((1, 1, x0.shape[-1]), generator=generator).to(src.device).to(torch.long)
    acp = alphas_cumprod(scheduler_config).to(src.device)
    sample = noisy_input.repeat(2, 1, 1)
    eps = (sample - acp[t] ** (0.5) * x0) / (1 - acp[t]) ** (0.5)  # get_eps
    eps_c, eps_u = eps.chunk(2)
    guided = eps_u + guidance * (eps_c - eps_u)
    num_train = int(scheduler_value(scheduler_config, "num_train_timesteps"))
    y = ddpm_single_step(guided, t, noisy_input, acp, num_train, generator)
    return PriorResult(y, inputs_embeds, x0, noisy_input, eps, guided, t)
