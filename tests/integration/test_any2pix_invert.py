"""LMMEdit_Any2PixInvert in real ComfyUI against the reference's inversion written with diffusers.

Reference: jacklishufan/InstructAny2Pix @ d11e49b `ddim/pnp_pipeline.py` `SDXLDDIMPipeline.inverse` (DDIMScheduler
timesteps walked upwards, eps of the UNet at each t with the prompt "", no CFG, `_backward_ddim` with the first
alpha_prev = alphas_cumprod[0]) and `pipeline.py` `polar_intrtpolate`, then diffusers' Euler start
`latents * init_noise_sigma`. The UNet is the tiny InstructPix2Pix one (an EPS UNet ComfyUI loads from a single
file; its 4 extra input channels get zeros, as ComfyUI's IP2P model does without an image), run by diffusers on the
same weights; the latent is ComfyUI's VAE encoding of the same pixels (the VAE is not under test here).
"""

from __future__ import annotations

import pytest
import torch

from .conftest import EXAMPLE_IMAGE, IP2P_CHECKPOINT

STEPS = 4
SIZE = 64
TOLERANCE = 1e-4  # max |ours - reference| / max |reference|, fp32 on CPU


@pytest.fixture(scope="module")
def parts(comfyui, ip2p_checkpoint, example_image):
    import nodes

    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(IP2P_CHECKPOINT)[:3]
    image = nodes.LoadImage().load_image(EXAMPLE_IMAGE)[0]
    return dict(model=model, clip=clip, vae=vae, image=image)


def _invert(parts, alpha: float, seed: int = 5, steps: int = STEPS) -> torch.Tensor:
    from lmm_edit.nodes.any2pix_invert import Any2PixInvertNode

    out = Any2PixInvertNode.execute(parts["model"], parts["clip"], parts["vae"], parts["image"], steps, alpha, seed, SIZE)
    return out.result[0]["samples"]


def _reference(parts, tiny_ip2p, alpha: float, seed: int = 5, steps: int = STEPS) -> torch.Tensor:
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    import nodes
    from lmm_edit.nodes.any2pix_invert import square_crop
    from lmm_edit.selfcheck.ip2p_models import SD15_SCHEDULER_CONFIG

    scale = parts["model"].get_model_object("latent_format").scale_factor
    latents = parts["vae"].encode(square_crop(parts["image"][:1], SIZE)).float() * scale
    text = nodes.CLIPTextEncode().encode(parts["clip"], "")[0][0][0].float()
    ddim = DDIMScheduler.from_config({**SD15_SCHEDULER_CONFIG, "set_alpha_to_one": False})
    ddim.set_timesteps(steps)
    acp = ddim.alphas_cumprod
    x, previous = latents, None
    with torch.no_grad():
        for t in reversed(ddim.timesteps):
            eps = tiny_ip2p.unet(torch.cat([x, torch.zeros_like(x)], dim=1), t, encoder_hidden_states=text).sample
            a_t = acp[t]
            a_prev = acp[previous] if previous is not None else ddim.final_alpha_cumprod
            x = a_t**0.5 * ((1 / a_prev**0.5) * x + ((1 / a_t - 1) ** 0.5 - (1 / a_prev - 1) ** 0.5) * eps)
            previous = t
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    mixed = x * alpha + noise * (1 - alpha)
    mixed = mixed / mixed.norm() * (x.norm() * alpha + noise.norm() * (1 - alpha))
    euler = EulerDiscreteScheduler.from_config(SD15_SCHEDULER_CONFIG)
    euler.set_timesteps(steps)
    return mixed * euler.init_noise_sigma / scale


@pytest.mark.parametrize("alpha", [1.0, 0.7])
def test_inversion_and_mix_match_the_reference(parts, tiny_ip2p, alpha):
    ours, ref = _invert(parts, alpha), _reference(parts, tiny_ip2p, alpha)
    assert ours.shape == (1, 4, SIZE // 8, SIZE // 8)
    err = float((ours - ref).abs().max() / ref.abs().max())
    print(f"[any2pix invert] alpha {alpha}: max relative error {err:.2e}")
    assert err < TOLERANCE


def test_seed_and_alpha_change_only_the_noise_part(parts):
    pure = _invert(parts, 1.0, seed=1)
    torch.testing.assert_close(_invert(parts, 1.0, seed=2), pure)  # alpha 1: no noise
    assert (_invert(parts, 0.5, seed=1) - _invert(parts, 0.5, seed=2)).abs().max() > 1e-3


def test_size_must_be_a_multiple_of_eight(parts):
    from lmm_edit.nodes.any2pix_invert import Any2PixInvertNode

    with pytest.raises(ValueError, match="size 60 must be a multiple of 8"):
        Any2PixInvertNode.execute(parts["model"], parts["clip"], parts["vae"], parts["image"], 2, 0.7, 0, 60)
