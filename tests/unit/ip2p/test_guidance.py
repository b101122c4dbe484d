"""InstructPix2Pix guidance math against the reference implementations' own formulas.

- timothybrooks/instruct-pix2pix edit_cli.py, CFGDenoiser.forward:
  out_uncond + text_cfg * (out_cond - out_img_cond) + image_cfg * (out_img_cond - out_uncond)
- diffusers StableDiffusionInstructPix2PixPipeline: the batched UNet output, chunked
  (text, image, uncond), combined before scheduler.step (checked by running the pipeline).
"""

from __future__ import annotations

import pytest
import torch

from lmm_edit.loaders.ip2p.guidance import dual_cfg, dual_cfg_weights

SCALES = [(7.5, 1.5), (1.0, 1.0), (3.0, 1.0), (1.0, 2.0), (7.5, 0.5), (0.0, 0.0)]


def _instruct_pix2pix_cfg_denoiser(out_cond, out_img_cond, out_uncond, text_cfg, image_cfg):
    # edit_cli.py, CFGDenoiser.forward, verbatim arithmetic
    return out_uncond + text_cfg * (out_cond - out_img_cond) + image_cfg * (out_img_cond - out_uncond)


@pytest.mark.parametrize("text_cfg, image_cfg", SCALES)
def test_dual_cfg_is_the_instruct_pix2pix_formula(text_cfg, image_cfg):
    g = torch.Generator().manual_seed(0)
    cond, img_cond, uncond = (torch.randn(2, 4, 8, 6, generator=g, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(
        dual_cfg(cond, img_cond, uncond, text_cfg, image_cfg),
        _instruct_pix2pix_cfg_denoiser(cond, img_cond, uncond, text_cfg, image_cfg),
    )


@pytest.mark.parametrize("text_cfg, image_cfg", SCALES)
def test_weights_sum_to_one_so_a_constant_prediction_is_kept(text_cfg, image_cfg):
    assert sum(dual_cfg_weights(text_cfg, image_cfg)) == pytest.approx(1.0)


@pytest.mark.parametrize("text_cfg, image_cfg", [(7.5, 1.5), (3.0, 1.2)])
def test_matches_diffusers_pipeline_combination(tiny_ip2p_pipeline, text_cfg, image_cfg):
    """Run diffusers for one step; our formula on its three UNet branches gives what it feeds the scheduler."""
    pipe, image = tiny_ip2p_pipeline
    branches, guided = [], []
    unet_forward = pipe.unet.forward

    def recording_unet(*args, **kwargs):
        out = unet_forward(*args, **kwargs)
        branches.append(out[0].clone())
        return out

    step = pipe.scheduler.step

    def recording_step(model_output, *args, **kwargs):
        guided.append(model_output.clone())
        return step(model_output, *args, **kwargs)

    pipe.unet.forward, pipe.scheduler.step = recording_unet, recording_step
    try:
        pipe(prompt="make it red", image=image, num_inference_steps=1, guidance_scale=text_cfg,
             image_guidance_scale=image_cfg, output_type="latent", generator=torch.Generator().manual_seed(0))
    finally:
        del pipe.unet.forward, pipe.scheduler.step
    (batched,), (reference,) = branches, guided
    text, image_branch, uncond = batched.chunk(3)  # diffusers' batch order: [text+image, image, uncond]
    torch.testing.assert_close(dual_cfg(text, image_branch, uncond, text_cfg, image_cfg), reference,
                               rtol=1e-5, atol=1e-5)


def test_diffusers_switches_all_guidance_off_below_image_scale_one(tiny_ip2p_pipeline):
    """The quirk we do not copy: image_guidance_scale < 1 leaves a single, unguided branch."""
    pipe, image = tiny_ip2p_pipeline
    batches = []
    unet_forward = pipe.unet.forward

    def recording_unet(sample, *args, **kwargs):
        batches.append(sample.shape[0])
        return unet_forward(sample, *args, **kwargs)

    pipe.unet.forward = recording_unet
    try:
        pipe(prompt="make it red", image=image, num_inference_steps=1, guidance_scale=7.5,
             image_guidance_scale=0.5, output_type="latent")
    finally:
        del pipe.unet.forward
    assert batches == [1]
