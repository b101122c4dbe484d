"""Helpers shared by the SmartEdit integration tests: error metric, UNet call recorder, one guided step."""

from __future__ import annotations

import torch

FP32_TOL = 1e-4  # fixture README: fp32 stages, max|ours - ref| / max|ref|
FP16_CAST_TOL = 2e-3  # fixture README: values the reference casts to fp16


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """The fixture README's metric: max|ours - ref| / max|ref|."""
    ours, ref = ours.detach().float().cpu(), ref.detach().float().cpu()
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float((ours - ref).abs().max() / ref.abs().max())


class UNetCalls:
    """UNet function wrapper: records each call's inputs and output (the denoised prediction)."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        self.calls.append(dict(x=args["input"].clone(), sigma=args["timestep"].clone(), c=args["c"],
                               order=list(args["cond_or_uncond"]), denoised=out.clone()))
        return out


def sample_first_step(model, positive, negative, noise, text_cfg=7.5, image_cfg=1.5, steps=1):
    """Our guider from the first sigma of the model's schedule; returns (UNet calls, guided denoised of step 0)."""
    import comfy.samplers

    from lmm_edit.nodes.guidance import build_guider

    recorder = UNetCalls()
    recorded = model.clone()
    recorded.set_model_unet_function_wrapper(recorder)
    guider = build_guider(recorded, positive, negative, text_cfg, image_cfg)
    sigmas = comfy.samplers.calculate_sigmas(recorded.get_model_object("model_sampling"), "normal", steps)
    denoised = []
    guider.sample(noise, torch.zeros_like(noise), comfy.samplers.sampler_object("euler"), sigmas,
                  callback=lambda step, x0, x, total: denoised.append(x0.clone()), disable_pbar=True, seed=0)
    return recorder.calls, denoised[0]


def seeded_noise(latent: dict, seed: int = 3) -> torch.Tensor:
    return torch.randn(latent["samples"].shape, generator=torch.Generator().manual_seed(seed))


def eps_of(call: dict) -> torch.Tensor:
    """The UNet's noise prediction of a recorded call (ComfyUI returns x - sigma * eps)."""
    return (call["x"] - call["denoised"]) / call["sigma"].reshape(-1, 1, 1, 1)


def in_branch_order(call: dict, branches: list[int]) -> torch.Tensor:
    """Rows of a recorded call's eps in the given branch order (0 = null image, 1 = negative, 2 = positive)."""
    return eps_of(call)[[call["order"].index(branch) for branch in branches]]
