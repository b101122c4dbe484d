"""Stage 4 (fusion), the projection part of stage 5 (fp32 and the fp16 run, both file forms) and the stage 6
math (timesteps, alphas, one inversion step fed the stored UNet output, the alpha mix, Euler's init sigma)."""

from __future__ import annotations

import pytest
import torch

from lmm_edit.loaders.any2pix import (
    REFERENCE,
    ddim_inversion_step,
    euler_init_noise_sigma,
    fuse,
    inversion_alphas,
    inversion_timesteps,
    load_global_local_adapter,
    polar_interpolate,
    renormalize_inputs,
)
from lmm_edit.loaders.any2pix.ip_projection import COND_SCALES, UNCOND_SCALES


def test_inputs_are_renormalised_to_norm_20(fx, check, tol):
    s3 = fx.stage[3]
    outputs = torch.cat([s3["imagebind_output_vision"], s3["imagebind_output_audio"]])
    order = [0 if k == "image" else 1 for k in fx.input_kinds()]
    check("x / (|x| + 1e-9) * 20", renormalize_inputs(outputs[order]), s3["extra_replacement_data"], tol.formula, tol.formula)


def test_fusion_with_the_stored_inputs(fx, check, tol):
    s4 = fx.stage[4]
    h = tuple(float(v) for v in s4["h"])
    assert h == pytest.approx(REFERENCE.h) and float(s4["norm"]) == REFERENCE.norm  # the fixture ran the defaults
    assert fx.run_info["alpha"] == REFERENCE.alpha
    latent = fuse(s4["fusion_base_embed"], s4["llm_image_embeds"], s4["prior_y"], h, float(s4["norm"]))
    check("fusion latent", latent, s4["fusion_latent"], tol.formula, tol.formula)
    y = s4["prior_y"]
    check("y / |y|", y / y.norm(), s4["fusion_y_normalized"], tol.formula, tol.formula)


@pytest.mark.parametrize("index", [0, 1], ids=["bin", "safetensors"])
def test_projection_tokens_fp32(fx, index, check, tol):
    adapter = load_global_local_adapter(fx.adapter_files[index])
    s5, mode = fx.stage[5], fx.run_info["ipproj_cond_mode_scales"][0]
    assert tuple(fx.run_info["ipproj_cond_mode_scales"][1]) == COND_SCALES
    assert tuple(fx.run_info["ipproj_uncond_mode_scales"][1]) == UNCOND_SCALES
    with torch.no_grad():
        cond = adapter.image_proj(s5["ipproj_cond_in"], mode, COND_SCALES)
        uncond = adapter.image_proj(s5["ipproj_uncond_in"], mode, UNCOND_SCALES)
        from_fused = adapter.image_proj.conditional(fx.stage[4]["fusion_latent"][0], mode)
    check("IP tokens cond", cond, s5["ipproj_cond_out"], tol.formula, tol.formula)
    check("IP tokens cond from the fused embedding", from_fused, s5["ipproj_cond_out"], tol.formula, tol.formula)
    check("IP tokens uncond (projection of zeros)", uncond, s5["ipproj_uncond_out"], tol.formula, tol.formula)
    check("IP tokens uncond helper", adapter.image_proj.unconditional(), s5["ipproj_uncond_out"], tol.formula, tol.formula)
    check("prompt_embeds[:, 77:] = IP tokens", s5["gen_prompt_embeds"][:, -cond.shape[1]:], cond, tol.formula, tol.formula)


@pytest.mark.parametrize("index", [0, 1], ids=["bin", "safetensors"])
def test_projection_tokens_fp16(fx, index, check, tol):
    adapter = load_global_local_adapter(fx.adapter_files[index], dtype=torch.float16)
    s = fx.stage[56]
    with torch.no_grad():
        cond = adapter.image_proj(s["ipproj_cond_in"], "global", COND_SCALES)
        uncond = adapter.image_proj.unconditional()
    assert cond.dtype == torch.float16
    check("IP tokens cond fp16", cond, s["ipproj_cond_out"], tol.fp16_atol, tol.fp16_rtol)
    check("IP tokens uncond fp16", uncond, s["ipproj_uncond_out"], tol.fp16_atol, tol.fp16_rtol)


def test_layer_weights_in_unet_attention_order(fx):
    adapter = load_global_local_adapter(fx.adapter_files[1])
    unet_keys = next(v for k, v in fx.weights_index.items() if k.endswith("unet/diffusion_pytorch_model.safetensors"))
    cross_attention_layers = sum(1 for k in unet_keys if k.endswith("attn2.to_k.weight"))
    assert len(adapter.layers) == cross_attention_layers
    assert adapter.layer_indices == sorted(adapter.layer_indices)
    file_keys = fx.weights_index[str(fx.adapter_files[1].relative_to(fx.root))]
    assert all(f"ip_adapter.{i}.to_k_ip.weight" in file_keys for i in adapter.layer_indices)
    cross_dim = fx.unet_config["cross_attention_dim"]
    assert all(k.shape[1] == v.shape[1] == adapter.image_proj.config.cross_dim for k, v in adapter.layers)
    assert adapter.image_proj.config.cross_dim == cross_dim


def test_inversion_timesteps_and_alphas(fx, check):
    s6 = fx.stage[6]
    steps = len(fx.run_info["inversion_timesteps"])
    assert inversion_timesteps(steps, fx.scheduler_config) == fx.run_info["inversion_timesteps"]
    t0, alpha_t, alpha_prev = inversion_alphas(steps, fx.scheduler_config)[0]
    assert t0 == int(s6["inv_unet0_t"])
    check("alpha_t (step 0)", alpha_t, s6["inv_step0_alpha_t"], 0.0)
    check("alpha_prev (step 0) = alphas_cumprod[0]", alpha_prev, s6["inv_step0_alpha_tm1"], 0.0)


def test_inversion_step_fed_the_stored_unet_output(fx, check, tol):
    s6 = fx.stage[6]
    _, alpha_t, alpha_prev = inversion_alphas(len(fx.run_info["inversion_timesteps"]), fx.scheduler_config)[0]
    out = ddim_inversion_step(s6["inv_unet0_sample"], s6["inv_unet0_out"], alpha_t, alpha_prev)
    check("DDIM inversion step 0", out, s6["inv_step0_out"], tol.formula, tol.formula)


def test_alpha_mix(fx, check, tol):
    s6 = fx.stage[6]
    mixed = polar_interpolate(s6["inv_final_latent"], fx.inputs["mix_noise"], fx.run_info["alpha"])
    check("polar_intrtpolate", mixed, s6["mix_out"], tol.formula, tol.formula)
    check("mixed latent handed to generation", mixed, fx.stage[5]["gen_latents_in"], tol.formula, tol.formula)


def test_euler_init_noise_sigma(fx):
    steps = fx.run_info["gen_kwargs"]["num_inference_steps"]
    assert float(euler_init_noise_sigma(steps, fx.scheduler_config)) == pytest.approx(fx.run_info["gen_init_noise_sigma"], abs=1e-6)
