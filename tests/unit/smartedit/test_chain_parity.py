"""The SmartEdit stages chained: raw image + instruction -> conditioning, against the reference's tensors."""

from __future__ import annotations

import torch

from lmm_edit.loaders.smartedit import bridge_condition, encode_instruction

FP32_TOL = 1e-4  # README: fp32 stages
FP16_TOL = 2e-3  # README: fp16 casts


def _encode(models, fixture, read_png):
    instruction, human = fixture.instruction_and_template()
    image = read_png(fixture.root / "inputs" / "input_image.png")
    return encode_instruction(models.lmm, image, instruction, template=human, teacher_ids=fixture.forced_ids)


def test_chain_from_raw_image_reaches_the_reference_image_token_states(models, fixture, rel_err, read_png):
    out = _encode(models, fixture, read_png)
    assert rel_err(out.vision_features, fixture.stage[1]["clip_image_features"][0]) < FP32_TOL
    assert rel_err(out.hidden_states, fixture.stage[2]["llm_img_token_hidden_states"][0]) < FP32_TOL
    assert out.token_ids.tolist() == fixture.forced_ids


def test_chain_prompt_tokens_equal_the_reference_tokens(models, fixture):
    from lmm_edit.loaders.smartedit.prompt import build_prompt

    instruction, human = fixture.instruction_and_template()
    assert models.lmm.tokenizer.encode(build_prompt(instruction, human)) == fixture.inputs["input_ids"].tolist()


def test_chain_conditioning_and_residual_match_the_reference(models, fixture, rel_err, read_png):
    instruction = _encode(models, fixture, read_png)
    latent_hw = tuple(fixture.stage[4]["modulated_image_features"].shape[-2:])
    out = bridge_condition(models.bridge, instruction, latent_hw)
    assert out.cond.dtype == torch.float16 and out.residual.dtype == torch.float16
    assert rel_err(out.qformer_out, fixture.stage[3]["qformer_out"]) < FP32_TOL
    assert rel_err(out.cond, fixture.stage[4]["final_text_conditioning_fp16"]) < FP16_TOL
    assert rel_err(out.residual, fixture.stage[4]["modulated_image_features_fp16"]) < FP16_TOL


def test_chain_conditioning_is_what_the_reference_unet_received(models, fixture, rel_err, read_png):
    """Stage 5 ran the UNet on the fp16 conditioning upcast; our cond must equal it to the fp16 tolerance."""
    instruction = _encode(models, fixture, read_png)
    out = bridge_condition(models.bridge, instruction, tuple(fixture.stage[5]["image_latents"].shape[-2:]))
    assert out.residual.shape[-2:] == fixture.stage[5]["image_latents"].shape[-2:]
    assert rel_err(out.cond.float(), fixture.stage[4]["final_text_conditioning_fp16"].float()) < FP16_TOL


def test_edit_region_attention_is_a_normalised_map_on_the_patch_grid(models, fixture, read_png):
    out = bridge_condition(models.bridge, _encode(models, fixture, read_png), (8, 8))
    grid = int(fixture.conversation["num_image_features"] ** 0.5)
    assert out.attention.shape == (1, grid, grid)
    assert float(out.attention.max()) == 1.0 and float(out.attention.min()) >= 0.0
