"""SmartEdit's UNet patch and BIM node in real ComfyUI against the parity fixture made by the reference code.

The fixture (LMM_EDIT_SMARTEDIT_FIXTURE, default ../shared/fixtures/smartedit_parity) holds tiny release files
and the reference's tensors of every stage. Its UNet is too small for ComfyUI's SD1.5 detection (2 heads,
4 norm groups), so ComfyUI's SD1.5-IP2P model is built here with those two settings; everything else (our
LDM key map, the BIM patch, the model-cond router, our guider, ComfyUI's sampler) is the real path.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from .smartedit_support import FP16_CAST_TOL, FP32_TOL, in_branch_order, rel_err, sample_first_step

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = pathlib.Path(os.environ.get("LMM_EDIT_SMARTEDIT_FIXTURE", ROOT.parent / "shared" / "fixtures" / "smartedit_parity"))
REFERENCE_BRANCHES = [2, 1, 0]  # fixture rows: (text, image), (null, image), (null, null)


@pytest.fixture(scope="module")
def fixture(comfyui):
    if not (FIXTURE / "README.md").is_file():
        pytest.skip(f"SmartEdit parity fixture not found at {FIXTURE} (set LMM_EDIT_SMARTEDIT_FIXTURE)")
    from safetensors.torch import load_file

    ck = FIXTURE / "checkpoints"
    tensors = {name: load_file(str(FIXTURE / sub)) for name, sub in (
        ("inputs", "inputs/inputs.safetensors"), ("stage1", "outputs/stage1_vision.safetensors"),
        ("stage2", "outputs/stage2_llm.safetensors"), ("stage4", "outputs/stage4_bim.safetensors"),
        ("stage5", "outputs/stage5_unet_fp32.safetensors"))}
    return dict(root=FIXTURE, bundle=ck / "SmartEdit-7B", unet_config=json.loads((ck / "stable-diffusion-v1-5" / "unet" / "config.json").read_text()),
                qformer_heads=json.loads((ck / "bert-base-uncased" / "config.json").read_text())["num_attention_heads"], **tensors)


def _groupnorm_ops(groups: int):
    """comfy.ops with GroupNorm of `groups` groups: ComfyUI's UNet hard-codes 32, the fixture's tiny UNet uses fewer."""
    import comfy.ops

    base = comfy.ops.disable_weight_init

    class GroupNorm(base.GroupNorm):
        def __init__(self, num_groups, num_channels, *args, **kwargs):
            super().__init__(groups, num_channels, *args, **kwargs)

    return type("FixtureGroupNormOps", (base,), {"GroupNorm": GroupNorm})


def _fixture_model(fixture):
    """The fixture's unet-15000 through our LDM key map into ComfyUI's SD1.5-IP2P model, with the BIM patch.

    ComfyUI's detection needs SD1.5 widths, so the model config is built from the detected UNet
    config with the fixture's head count and norm groups (its tiny diffusers config).
    """
    import comfy.model_detection
    import comfy.model_patcher
    import comfy.supported_models

    from lmm_edit.loaders.ip2p.unet_keys import LDM_PREFIX
    from lmm_edit.loaders.smartedit import find_bundle, load_unet_ldm
    from lmm_edit.nodes.bim_residual import install_bim_residual

    state = {k[len(LDM_PREFIX):]: v for k, v in load_unet_ldm(find_bundle(fixture["bundle"])).items()}
    config = comfy.supported_models.SD15_instructpix2pix(comfy.model_detection.detect_unet_config(state, ""))
    config.unet_config.update(num_heads=fixture["unet_config"]["attention_head_dim"], num_head_channels=-1)
    config.set_inference_dtype(torch.float32, None)
    config.custom_operations = _groupnorm_ops(fixture["unet_config"]["norm_num_groups"])
    model = config.get_model({})
    model.diffusion_model.load_state_dict(state, strict=True)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    install_bim_residual(patcher)
    return patcher


def test_fixture_unet_is_refused_by_the_loader_with_the_expected_shape(fixture):
    from lmm_edit.loaders.errors import ModelFileError
    from lmm_edit.loaders.smartedit import find_bundle
    from lmm_edit.nodes.smartedit_loader import load_smartedit_unet

    with pytest.raises(ModelFileError, match="expected an SD1.5 InstructPix2Pix UNet.*conv_in.*Fix:"):
        load_smartedit_unet(find_bundle(fixture["bundle"]), None)


def _fixture_step(fixture, cond, residual):
    """One three-branch UNet call at sigma_max through our guider, started from the fixture's noise."""
    from lmm_edit.nodes.conditioning import edit_conditionings

    s5 = fixture["stage5"]
    model = _fixture_model(fixture)
    positive, negative = edit_conditionings(cond, [[fixture["inputs"]["uncond_prompt_embeds"], {}]], s5["image_latents"], residual)
    sigma = float(model.get_model_object("model_sampling").sigma_max)
    # ComfyUI starts a full denoise from noise * sqrt(1 + sigma^2); the reference from noise * sigma
    noise = fixture["inputs"]["noise"] * sigma / (1 + sigma**2) ** 0.5
    calls, denoised = sample_first_step(model, positive, negative, noise)
    (call,) = calls
    x = fixture["inputs"]["noise"] * sigma
    return call, (x - denoised) / sigma


def test_fixture_stage5_three_branch_call_and_guidance_match_the_reference(fixture):
    s4, s5 = fixture["stage4"], fixture["stage5"]
    call, guided = _fixture_step(fixture, s4["final_text_conditioning_fp16"].float(), s4["modulated_image_features_fp16"])
    scaled = call["x"] / (call["sigma"].reshape(-1, 1, 1, 1) ** 2 + 1) ** 0.5
    assert rel_err(scaled, s5["scaled_latent_model_input"].expand(3, -1, -1, -1)) < 1e-6
    assert rel_err(in_branch_order(call, REFERENCE_BRANCHES), s5["unet_out"]) < FP32_TOL
    assert rel_err(guided, s5["guided_noise_pred"]) < FP32_TOL


class _ReferenceLatentVAE:
    """Stands in for the fixture's VAE (4 GroupNorm groups, which ComfyUI's VAE cannot build): encodes the
    reference's SD input image to the reference's image latent."""

    def __init__(self, pixels: torch.Tensor, latent: torch.Tensor) -> None:
        self.pixels, self.latent = pixels, latent

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        assert torch.equal(pixels, self.pixels), "the BIM node did not hand the source image to the VAE unchanged"
        return self.latent.clone()


def _fixture_instruction(fixture):
    from lmm_edit.loaders.instruction import LMMInstruction

    return LMMInstruction(
        hidden_states=fixture["stage2"]["llm_img_token_hidden_states"][0],
        vision_features=fixture["stage1"]["clip_image_features"][0],
        token_ids=fixture["inputs"]["forced_token_ids"], image_tokens_in_order=False, family="llava-1.1", forced=True,
    )


def test_fixture_bim_node_then_unet_reproduce_the_reference(fixture):
    """Stage 4 through the BIM node (fed the reference's stage 1-2 outputs), then chained into stage 5."""
    from lmm_edit.loaders.smartedit import find_bundle, load_bridge
    from lmm_edit.nodes.conditioning import BIMConditioningNode
    from lmm_edit.nodes.module_patchers import wrap_module

    s4, s5 = fixture["stage4"], fixture["stage5"]
    bridge = wrap_module(load_bridge(find_bundle(fixture["bundle"]), torch.float32, fixture["qformer_heads"]), torch.device("cpu"))
    png = np.asarray(Image.open(fixture["root"] / "inputs" / "sd_input_256.png").convert("RGB"), dtype=np.float32)
    image = torch.from_numpy(png / 255.0).unsqueeze(0)
    vae = _ReferenceLatentVAE(image, s5["image_latents"])
    null_text = [[fixture["inputs"]["uncond_prompt_embeds"], {}]]
    positive, negative, latent, mask = BIMConditioningNode.execute(bridge, _fixture_instruction(fixture), vae, image, null_text).result
    cond = positive[0][0]
    residual = positive[0][1]["model_conds"]["lmm_edit_bim_residual"].cond
    assert rel_err(cond, s4["final_text_conditioning_fp16"]) < FP16_CAST_TOL
    assert rel_err(residual, s4["modulated_image_features_fp16"]) < FP16_CAST_TOL
    assert torch.equal(negative[0][0], fixture["inputs"]["uncond_prompt_embeds"])
    assert latent["samples"].shape == s5["image_latents"].shape and mask.shape == (1, 256, 256)
    call, guided = _fixture_step(fixture, cond, residual)
    assert rel_err(in_branch_order(call, REFERENCE_BRANCHES), s5["unet_out"]) < FP16_CAST_TOL
    assert rel_err(guided, s5["guided_noise_pred"]) < FP16_CAST_TOL
