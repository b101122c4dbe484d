"""InstructAny2Pix's SDXL stage through real ComfyUI vs the reference fixture: one guided UNet call and the
first Euler step of generation with the pack's image branch fed the fused embedding (fixture stage 5).

The fixture (``LMM_EDIT_ANY2PIX_FIXTURE``, default ``../shared/fixtures/any2pix_parity``) holds a tiny SDXL-shaped
diffusers UNet and the global-local IP-Adapter the reference ran. ComfyUI's detection does not match a tiny
UNet, so its model is built here as ``CheckpointLoaderSimple`` would build a detected one: the LDM config from
the diffusers config (``selfcheck/sdxl_models.ldm_unet_config``), ``comfy.supported_models.SDXL`` with that
config, its head width kept (SDXL's ``unet_extra_config`` sets 64), ``model_base.SDXL`` with the weights mapped
by ComfyUI's own ``comfy.utils.unet_to_diffusers``. One more size is the fixture's own: ``model_base.SDXL``
embeds the six size conds at 256 channels each (``Timestep(256)``), the tiny UNet at
``addition_time_embed_dim``, so its ``embedder`` is set to that width; and ComfyUI's UNet builds every GroupNorm
with 32 groups (SDXL's ``norm_num_groups``), the tiny UNet has ``norm_num_groups`` 8, so the model is built with
an operations namespace (``model_config.custom_operations``) whose GroupNorm takes the fixture's group count.

Inputs come from the fixture files: the text embeddings of both prompts (first 77 tokens of
``gen_prompt_embeds`` / ``gen_negative_prompt_embeds``), pooled embeddings, time ids, the fused embedding
(stage 4), the UNet input and timestep, CFG and the scheduler's timesteps from ``run_info.json``. The image
tokens are made by the pack (adapter loader + image branch), not taken from the fixture.
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest
import torch
from safetensors.torch import load_file

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = pathlib.Path(os.environ.get("LMM_EDIT_ANY2PIX_FIXTURE", REPO.parent / "shared" / "fixtures" / "any2pix_parity"))
SDXL = FIXTURE / "checkpoints" / "stabilityai" / "stable-diffusion-xl-base-1.0"
ADAPTER = FIXTURE / "checkpoints" / "ckpts" / "sdxl" / "ip_adapter_global_local_2_view.bin"
TOLERANCE = 1e-4  # fixture README: UNet outputs, fp32 (atol and rtol)
IP_SCALE = 1.0  # InstructAny2PixPipeline.__call__ default `scale`


def _max_err(name: str, ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.detach().float().cpu(), ref.float()
    assert ours.shape == ref.shape, (name, tuple(ours.shape), tuple(ref.shape))
    err = float((ours - ref).abs().max())
    bound = TOLERANCE + TOLERANCE * float(ref.abs().max())
    print(f"[any2pix SDXL] {name}: max abs err {err:.2e} (tolerance {bound:.2e}, max |ref| {float(ref.abs().max()):.3g})")
    return err if err <= bound else float("inf")


@pytest.fixture(scope="module")
def fixture():
    assert FIXTURE.is_dir(), f"the InstructAny2Pix fixture is missing: {FIXTURE} (set LMM_EDIT_ANY2PIX_FIXTURE)"
    outputs = FIXTURE / "outputs"
    return dict(stage5=load_file(outputs / "stage5_ipadapter_unet.safetensors"),
                stage4=load_file(outputs / "stage4_fusion.safetensors"),
                run_info=json.loads((outputs / "run_info.json").read_text()),
                unet_config=json.loads((SDXL / "unet" / "config.json").read_text()),
                scheduler=json.loads((SDXL / "scheduler" / "scheduler_config.json").read_text()))


def build_comfy_sdxl(unet_config: dict):
    """ComfyUI's SDXL model (fp32, CPU) from the fixture's diffusers UNet, in a ModelPatcher."""
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.model_patcher
    import comfy.ops
    import comfy.supported_models
    import comfy.utils

    from lmm_edit.selfcheck.sdxl_models import ldm_unet_config

    groups = unet_config["norm_num_groups"]

    class FixtureGroupNorms(comfy.ops.disable_weight_init):
        class GroupNorm(comfy.ops.disable_weight_init.GroupNorm):
            def __init__(self, num_groups, *args, **kwargs):
                super().__init__(groups, *args, **kwargs)  # ComfyUI passes 32 (SDXL)

    ldm = ldm_unet_config(unet_config)
    config = comfy.supported_models.SDXL(ldm)
    config.custom_operations = FixtureGroupNorms
    config.unet_config["num_head_channels"] = ldm["num_head_channels"]  # SDXL's extra config says 64
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    model.embedder = openaimodel.Timestep(unet_config["addition_time_embed_dim"])  # SDXL: Timestep(256)
    key_map = comfy.utils.unet_to_diffusers(dict(ldm))
    weights = load_file(SDXL / "unet" / "diffusion_pytorch_model.safetensors")
    assert set(weights) <= set(key_map), sorted(set(weights) - set(key_map))[:5]  # the map lists variants too
    state = {key_map[k]: v.float() for k, v in weights.items()}
    missing, unexpected = model.diffusion_model.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing[:5], unexpected[:5])
    device = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def _conditioning(embeds: torch.Tensor, pooled: torch.Tensor, time_ids: torch.Tensor, text_tokens: int) -> list:
    height, width, crop_h, crop_w, target_h, target_w = (int(v) for v in time_ids)
    return [[embeds[:, :text_tokens].clone(), {
        "pooled_output": pooled.clone(), "height": height, "width": width, "crop_h": crop_h, "crop_w": crop_w,
        "target_height": target_h, "target_width": target_w}]]


def test_one_guided_unet_call_and_euler_step_equal_the_reference(comfyui, fixture):
    import comfy.k_diffusion.sampling as k_sampling
    import comfy.samplers

    from lmm_edit.loaders.ip_adapter import load_image_adapter
    from lmm_edit.nodes.adapters import IAAImageBranchNode
    from lmm_edit.nodes.image_branch_install import wrap_adapter

    from .image_branch_support import UNetForwardRecorder

    s5, info = fixture["stage5"], fixture["run_info"]
    tokens = s5["ipproj_cond_out"].shape[1]
    text_tokens = s5["gen_prompt_embeds"].shape[1] - tokens  # 77
    time_ids = s5["gen_unet0_time_ids"]
    positive = _conditioning(s5["gen_prompt_embeds"], s5["gen_pooled_prompt_embeds"], time_ids[1], text_tokens)
    negative = _conditioning(s5["gen_negative_prompt_embeds"], s5["gen_negative_pooled_prompt_embeds"], time_ids[0],
                             text_tokens)

    model = build_comfy_sdxl(fixture["unet_config"])
    sampling = model.get_model_object("model_sampling")
    for key in ("beta_start", "beta_end", "num_train_timesteps"):  # the fixture's schedule is ComfyUI's SDXL one
        assert fixture["scheduler"][key] == pytest.approx(
            {"beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": sampling.sigmas.shape[0]}[key])
    adapter = wrap_adapter(load_image_adapter(ADAPTER))
    fused = fixture["stage4"]["fusion_latent"].reshape(1, -1)
    patched, positive, negative = IAAImageBranchNode.execute(
        model, adapter, positive, negative, IP_SCALE, 0.0, 1.0, embedding=fused).result

    t0, t1 = info["gen_timesteps"][:2]
    assert float(s5["gen_unet0_t"]) == t0
    sigmas = torch.stack([sampling.sigma(torch.tensor(float(t))) for t in (t0, t1)])
    # diffusers' Euler sample at step 0 = the UNet input times sqrt(sigma^2 + 1) (scale_model_input)
    x0 = s5["gen_unet0_sample"][:1] * (sigmas[0] ** 2 + 1) ** 0.5
    assert float((x0 - s5["gen_latents_in"] * info["gen_init_noise_sigma"]).abs().max()) < 1e-4

    def one_euler_step(model_k, noise, sigmas_in, extra_args=None, callback=None, disable=None):
        return k_sampling.sample_euler(model_k, x0.clone(), sigmas_in, extra_args=extra_args, disable=True)

    recorder = UNetForwardRecorder()
    guider = comfy.samplers.CFGGuider(recorder.install(patched))
    guider.set_conds(positive, negative)
    guider.set_cfg(float(info["gen_kwargs"]["guidance_scale"]))
    latent = torch.zeros_like(x0)
    with torch.no_grad():
        step = guider.sample(torch.zeros_like(x0), latent, comfy.samplers.KSAMPLER(one_euler_step), sigmas,
                             disable_pbar=True, seed=0)
    call = recorder.calls[0]
    rows = {branch: n for n, branch in enumerate(call["order"])}  # ComfyUI: 0 = cond, 1 = uncond
    eps = torch.cat([call["eps"][rows[1]:rows[1] + 1], call["eps"][rows[0]:rows[0] + 1]])  # reference: uncond first
    guided = eps[:1] + info["gen_kwargs"]["guidance_scale"] * (eps[1:] - eps[:1])
    errors = [
        _max_err("UNet input (x / sqrt(sigma^2 + 1))", call["x"][:1], s5["gen_unet0_sample"][:1]),
        _max_err("timestep", call["t"][:1], s5["gen_unet0_t"].reshape(1)),
        _max_err("UNet output, uncond and cond rows (IP-Adapter processors)", eps, s5["gen_unet0_out"]),
        _max_err("guided noise prediction (CFG)", guided, s5["gen_step0_noise_pred_guided"]),
        # the guider hands back process_latent_out(x): undo the SDXL latent scale to compare the raw sample
        _max_err("Euler step 0 (ComfyUI sample_euler)", patched.model.process_latent_in(step), s5["gen_step0_prev_sample"]),
    ]
    assert all(e != float("inf") for e in errors), errors
