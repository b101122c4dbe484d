"""LMMEdit_Any2PixInvert: DDIM inversion of the base image through a ComfyUI MODEL, mixed with noise -> LATENT.

Reference: jacklishufan/InstructAny2Pix @ d11e49b, `ddim/pnp_pipeline.py` `SDXLDDIMPipeline.inverse` (prompt "",
no CFG, the DDIM timesteps walked upwards 1, 41, ..., 961 for 25 steps) and `pipeline.py` `polar_intrtpolate`
(loaders/any2pix/inversion.py holds the step and the mix). Here the UNet runs through ComfyUI's own sampling
path (`comfy.sample.sample_custom` with CFG 1, so only the empty-prompt conditioning is evaluated, with every
patch of the MODEL), in a sampler function that evaluates eps at the timestep of each inversion step.

The LATENT is the mix times sqrt(sigma_max^2 + 1), in the VAE's scale, as diffusers' Euler scheduler starts
from `latents * init_noise_sigma`: a sampler that adds NO noise and starts at sigma_max of the same 25
"leading" timesteps continues the reference's generation: KSamplerAdvanced (add_noise disable, sampler euler or
ddim, scheduler ddim_uniform, the same steps) or SamplerCustom (add_noise off, BasicScheduler ddim_uniform).
"""

from __future__ import annotations

import comfy.sample
import comfy.samplers
import comfy.utils
import torch
from comfy_api.v0_0_2 import io

from ..loaders.any2pix import ddim_inversion_step, inversion_alphas, polar_interpolate
from ..loaders.any2pix.fusion import REFERENCE
from ..loaders.pixels import first_rgb

NODE = "LMMEdit_Any2PixInvert"
REFERENCE_SIZE = 1024  # pipeline.py: resize_and_crop(base, (1024, 1024), "middle")


def square_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """IMAGE [1, H, W, 3] -> center square resized to size x size (Lanczos, as the reference's PIL resize)."""
    samples = image.movedim(-1, 1)
    side = min(samples.shape[2], samples.shape[3])
    top, left = (samples.shape[2] - side) // 2, (samples.shape[3] - side) // 2
    samples = samples[:, :, top:top + side, left:left + side]
    return comfy.utils.common_upscale(samples, size, size, "lanczos", "disabled").movedim(1, -1).clamp(0, 1)


def empty_prompt(clip) -> list:
    """CONDITIONING of the prompt "" (both SDXL text encoders and the pooled output), as the inversion uses."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(""))


def inversion_sigmas(model, steps: int) -> tuple[torch.Tensor, list]:
    """ComfyUI sigmas of the inversion timesteps (ascending) and the (t, alpha_t, alpha_prev) of each step."""
    sampling = model.get_model_object("model_sampling")
    alphas = inversion_alphas(steps)
    sigmas = torch.stack([sampling.sigma(torch.tensor(float(t))) for t, _, _ in alphas]).float()
    return sigmas, alphas


def inversion_sampler(alphas: list, progress: comfy.utils.ProgressBar) -> comfy.samplers.KSAMPLER:
    """A KSAMPLER whose function inverts: x (= the clean latent, VP scale) -> x at the last timestep."""

    @torch.no_grad()
    def invert(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = extra_args or {}
        s_in = x.new_ones([x.shape[0]])
        for i, (_, alpha_t, alpha_prev) in enumerate(alphas):
            sigma = sigmas[i]
            x_sigma = x * (1 + sigma**2) ** 0.5  # ComfyUI's calculate_input divides it back: the UNet sees x
            denoised = model(x_sigma, sigma * s_in, **extra_args)
            eps = (x_sigma - denoised) / sigma
            x = ddim_inversion_step(x, eps, alpha_t.to(x.device), alpha_prev.to(x.device))
            progress.update(1)
        return x

    return comfy.samplers.KSAMPLER(invert)


def invert_and_mix(model, vae, clip, image: torch.Tensor, steps: int, alpha: float, seed: int, size: int) -> dict:
    pixels = square_crop(image, size) if size else image
    latent = vae.encode(pixels[:, :, :, :3])
    latent_format = model.get_model_object("latent_format")
    sigmas, alphas = inversion_sigmas(model, steps)
    cond = empty_prompt(clip)
    inverted = comfy.sample.sample_custom(
        model, torch.zeros_like(latent), 1.0, inversion_sampler(alphas, comfy.utils.ProgressBar(steps)), sigmas,
        cond, cond, latent, seed=seed,
    )
    inverted = latent_format.process_in(inverted.float().cpu())  # the reference's scale (x 0.13025)
    noise = torch.randn(inverted.shape, generator=torch.Generator().manual_seed(seed))
    mixed = polar_interpolate(inverted, noise, alpha)
    sigma_max = model.get_model_object("model_sampling").sigma(torch.tensor(float(alphas[-1][0])))
    start = mixed * (sigma_max.float() ** 2 + 1) ** 0.5  # diffusers: latents * init_noise_sigma
    return {"samples": latent_format.process_out(start)}


class Any2PixInvertNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE,
            display_name="InstructAny2Pix Invert (DDIM + noise mix)",
            category="lmm_edit/latent",
            description="DDIM-inverts the base image through the SDXL MODEL with the empty prompt and no CFG, mixes "
            "the result with seeded noise (alpha) as InstructAny2Pix does, and returns the start LATENT. Sample it with "
            "KSamplerAdvanced: add_noise disable, sampler euler (reference __call__) or ddim (Gradio demo), scheduler "
            "ddim_uniform, the same steps.",
            inputs=[
                io.Model.Input("model", tooltip="The SDXL MODEL of Load Checkpoint (before the image branch: the "
                               "inversion runs text-only)."),
                io.Clip.Input("clip", tooltip="The SDXL CLIP of Load Checkpoint: encodes the empty prompt."),
                io.Vae.Input("vae", tooltip="The SDXL VAE: encodes the base image (the posterior mean; the reference "
                             "samples the posterior)."),
                io.Image.Input("image", tooltip="The base image (base_image of LMMEdit_Any2PixEncode); the first of "
                               "a batch is used."),
                io.Int.Input("steps", default=REFERENCE.num_inference_steps, min=1, max=200,
                             tooltip="Inversion steps = the sampler's steps (25 in the reference)."),
                io.Float.Input("alpha", default=REFERENCE.alpha, min=0.0, max=1.0, step=0.05,
                               tooltip="1 keeps the pure inversion (most of the base image), 0 is pure noise. 0.7 "
                               "in the reference's __call__, 1.0 in the Gradio demo."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seeds the noise mixed into the inversion."),
                io.Int.Input("size", default=REFERENCE_SIZE, min=0, max=4096, step=8,
                             tooltip="The base image is center-cropped to a square and resized to size x size "
                             "(1024 in the reference); 0 keeps it as it is."),
            ],
            outputs=[io.Latent.Output(display_name="LATENT", tooltip="The start latent for a sampler that adds no "
                                      "noise (see the node description).")],
        )

    @classmethod
    def execute(cls, model, clip, vae, image, steps, alpha, seed, size) -> io.NodeOutput:
        image = first_rgb(image, NODE)
        if size and size % 8:
            raise ValueError(f"{NODE}: size {size} must be a multiple of 8 (the VAE's stride)")
        return io.NodeOutput(invert_and_mix(model, vae, clip, image, steps, alpha, seed, size))


NODES = [Any2PixInvertNode]
