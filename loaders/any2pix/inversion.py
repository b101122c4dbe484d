"""DDIM inversion step math and the inversion/noise mix of InstructAny2Pix, as pure functions a sampler node
drives with its own UNet.

Reference: jacklishufan/InstructAny2Pix @ d11e49b:
- `instructany2pix/ddim/pnp_pipeline.py` `SDXLDDIMPipeline.inverse`: a `DDIMScheduler` from the SDXL config,
  `set_timesteps(num_inference_steps)`, the timesteps walked in REVERSE (1, 41, ..., 961 for 25 steps), no
  CFG, and per step `_backward_ddim(x, alpha_t = alphas_cumprod[t], alpha_tm1 = alphas_cumprod[previous t])`
  where the first step's alpha_tm1 is `final_alpha_cumprod` = alphas_cumprod[0] (`set_alpha_to_one: false`),
  not 1 (fixture README quirk 12);
- `instructany2pix/pipeline.py` `polar_intrtpolate(x, y, alpha)`: `(alpha x + (1 - alpha) y)` rescaled to the
  norm `alpha |x| + (1 - alpha) |y|` (whole-tensor norms; quirk 13).
The generation then starts from the mix with the base pipeline's Euler scheduler, which scales it by
`init_noise_sigma` (see `euler_init_noise_sigma`).
"""

from __future__ import annotations

import torch

from .schedule import SDXL_SCHEDULER, alphas_cumprod, leading_timesteps, scheduler_value


def inversion_timesteps(num_steps: int, config: dict = SDXL_SCHEDULER) -> list[int]:
    """Ascending timesteps of the inversion: `reversed(DDIMScheduler.timesteps)`."""
    return list(reversed(leading_timesteps(num_steps, config)))


def inversion_alphas(num_steps: int, config: dict = SDXL_SCHEDULER) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(t, alpha_t, alpha_prev) per inversion step, fp32 0-dim tensors as the reference indexes them."""
    acp = alphas_cumprod(config)
    final = torch.tensor(1.0) if scheduler_value(config, "set_alpha_to_one") else acp[0]
    out, prev = [], None
    for t in inversion_timesteps(num_steps, config):
        out.append((t, acp[t], acp[prev] if prev is not None else final))
        prev = t
    return out


def ddim_inversion_step(x: torch.Tensor, eps: torch.Tensor, alpha_t: torch.Tensor, alpha_prev: torch.Tensor) -> torch.Tensor:
    """`_backward_ddim(x_tm1=x, alpha_t, alpha_tm1=alpha_prev, eps_xt=eps)`: x_t from x_{t-1} and the UNet's eps
    at t (Dhariwal & Nichol 2021, appendix F): sqrt(a) (x / sqrt(b) + (sqrt(1/a - 1) - sqrt(1/b - 1)) eps)."""
    a, b = alpha_t, alpha_prev
    sa, sb = a**0.5, b**0.5
    return sa * ((1 / sb) * x + ((1 / a - 1) ** 0.5 - (1 / b - 1) ** 0.5) * eps)


def polar_interpolate(inverted: torch.Tensor, noise: torch.Tensor, alpha: float) -> torch.Tensor:
    """`polar_intrtpolate`: alpha=1 keeps the inversion, alpha=0 is pure noise."""
    n0, n1 = inverted.norm(), noise.norm()
    mixed = inverted * alpha + noise * (1 - alpha)
    n = n0 * alpha + n1 * (1 - alpha)
    return mixed / mixed.norm() * n


def euler_init_noise_sigma(num_steps: int, config: dict = SDXL_SCHEDULER) -> torch.Tensor:
    """`EulerDiscreteScheduler.init_noise_sigma` after `set_timesteps(num_steps)` ("leading"): sqrt(sigma_max^2 + 1),
    sigma_max the sigma of the first timestep (961 of 25 steps: 11.7188). diffusers 0.26.3 computes the sigmas
    in fp32 from alphas_cumprod, takes them at the integer timesteps and stores them as fp32."""
    acp = alphas_cumprod(config)
    sigmas = ((1 - acp) / acp) ** 0.5
    sigma_max = sigmas[leading_timesteps(num_steps, config)].max()
    return (sigma_max**2 + 1) ** 0.5
