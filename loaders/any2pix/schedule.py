"""Noise-schedule arithmetic shared by the prior's DDPM step and the DDIM inversion, as diffusers 0.26.3
(`DDPMScheduler` / `DDIMScheduler` / `EulerDiscreteScheduler` `__init__` and `set_timesteps`) computes it
from the SDXL base `scheduler/scheduler_config.json` (stabilityai/stable-diffusion-xl-base-1.0).

InstructAny2Pix builds all three schedulers from that config (jacklishufan/InstructAny2Pix @ d11e49b:
`prior/model.py` `DDPMScheduler.from_pretrained(..., subfolder="scheduler")`, `pipeline.py`
`DDIMScheduler.from_config(pipe.scheduler.config)`, the base pipeline's Euler scheduler).
"""

from __future__ import annotations

import torch

# stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json (the values the schedules use)
SDXL_SCHEDULER = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "steps_offset": 1, "timestep_spacing": "leading", "set_alpha_to_one": False, "prediction_type": "epsilon",
}


def scheduler_value(config: dict, key: str):
    return config.get(key, SDXL_SCHEDULER[key])


def alphas_cumprod(config: dict = SDXL_SCHEDULER) -> torch.Tensor:
    """[num_train_timesteps] fp32 cumulative products of (1 - beta), computed in fp32 as diffusers does."""
    start, end = float(scheduler_value(config, "beta_start")), float(scheduler_value(config, "beta_end"))
    n = int(scheduler_value(config, "num_train_timesteps"))
    schedule = scheduler_value(config, "beta_schedule")
    if schedule == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float32) ** 2
    elif schedule == "linear":
        betas = torch.linspace(start, end, n, dtype=torch.float32)
    else:
        raise ValueError(f"beta_schedule {schedule!r} is not supported (SDXL: scaled_linear)")
    return torch.cumprod(1.0 - betas, dim=0)


def leading_timesteps(num_steps: int, config: dict = SDXL_SCHEDULER) -> list[int]:
    """Descending timesteps of `set_timesteps(num_steps)` with "leading" spacing: (arange(n) * (T // n))[::-1]
    + steps_offset (SDXL, 25 steps: 961, 921, ..., 1)."""
    if scheduler_value(config, "timestep_spacing") != "leading":
        raise ValueError("only timestep_spacing 'leading' (the SDXL base scheduler's) is supported")
    ratio = int(scheduler_value(config, "num_train_timesteps")) // num_steps
    offset = int(scheduler_value(config, "steps_offset"))
    return [i * ratio + offset for i in reversed(range(num_steps))]
