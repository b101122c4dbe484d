"""Each SmartEdit stage against the reference code's own tensors (fixture README, tolerances from there).

Every stage is fed the reference's output of the previous stage; test_chain_parity.py chains them.
"""

from __future__ import annotations

import torch

from lmm_edit.loaders.smartedit.conditioning import REFERENCE_CAST, TEXT_RESIDUAL_WEIGHT, run_bim
from lmm_edit.loaders.smartedit.decode import decode_image_states
from lmm_edit.loaders.smartedit.encoder import prompt_inputs
from lmm_edit.loaders.smartedit.vision import CLIP_MEAN, CLIP_STD, clip_pixels

FP32_TOL = 1e-4  # README: fp32 stages
FP16_TOL = 2e-3  # README: fp16 casts computed in fp32 then cast


def reference_pixels(fixture, read_png) -> torch.Tensor:
    """README: CLIP pixels = ((png / 255) - mean) / std of vit_input_224.png, CHW."""
    png = read_png(fixture.root / "inputs" / "vit_input_224.png")
    return ((png - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)).permute(2, 0, 1).unsqueeze(0)


def test_clip_preprocessing_reproduces_the_reference_resize(fixture, read_png):
    raw = read_png(fixture.root / "inputs" / "input_image.png")
    size = read_png(fixture.root / "inputs" / "vit_input_224.png").shape[0]
    assert torch.equal(clip_pixels(raw, size), reference_pixels(fixture, read_png))


def test_stage1_clip_features_match(models, fixture, rel_err, read_png):
    with torch.no_grad():
        feats = models.lmm.vision(reference_pixels(fixture, read_png))
    assert rel_err(feats, fixture.stage[1]["clip_image_features"]) < FP32_TOL


def test_stage1_mm_projector_comes_from_the_embeddings_qformer_file(models, fixture, rel_err):
    with torch.no_grad():
        projected = models.lmm.mm_projector(fixture.stage[1]["clip_image_features"])
    assert rel_err(projected, fixture.stage[1]["mm_projector_out"]) < FP32_TOL


def test_stage2_prompt_embeddings_splice_the_image_at_the_first_img0(models, fixture, rel_err):
    with torch.no_grad():
        prompt = prompt_inputs(models.lmm, fixture.inputs["input_ids"], fixture.stage[1]["mm_projector_out"])
    assert prompt.insert_at == fixture.conversation["img0_position_in_input_ids"]
    assert prompt.inputs_embeds.shape[1] == fixture.conversation["llm_inputs_embeds_length"]
    assert rel_err(prompt.inputs_embeds, fixture.stage[2]["llm_inputs_embeds"]) < FP32_TOL
    start, count = prompt.insert_at, fixture.conversation["num_image_features"]
    assert torch.equal(prompt.inputs_embeds[:, start : start + count], fixture.stage[1]["mm_projector_out"])


def _forced_decode(models, fixture):
    return decode_image_states(
        models.lmm.llm, fixture.stage[2]["llm_inputs_embeds"], models.lmm.info.image_token_ids, models.lmm.info.eos_id,
        teacher_ids=fixture.forced_ids,
    )


def test_stage2_decode_step_states_match(models, fixture, rel_err):
    result = _forced_decode(models, fixture)
    assert result.token_ids == fixture.forced_ids
    assert rel_err(result.step_states, fixture.stage[2]["step_last_hidden_state"]) < FP32_TOL
    assert rel_err(result.first_logits, fixture.stage[2]["prompt_step_logits_last_position"][0]) < FP32_TOL


def test_stage2_greedy_choices_match_the_reference_argmax(models, fixture):
    result = _forced_decode(models, fixture)
    assert result.model_choices == [step["greedy_argmax"] for step in fixture.conversation["decode_steps"]]


def test_stage2_kept_states_are_the_steps_fed_an_image_token(models, fixture, rel_err):
    result = _forced_decode(models, fixture)
    first_image = fixture.conversation["img_start_token_id"]
    fed = [None, *fixture.forced_ids[:-1]]
    kept_steps = [s for s, token in enumerate(fed) if token is not None and token >= first_image]
    assert torch.equal(result.kept_states, result.step_states[kept_steps])
    assert rel_err(result.kept_states, fixture.stage[2]["llm_img_token_hidden_states"][0]) < FP32_TOL


def test_stage3_qformer_matches(models, fixture, rel_err):
    with torch.no_grad():
        q = models.bridge.qformer(fixture.stage[2]["llm_img_token_hidden_states"])
    assert rel_err(q, fixture.stage[3]["qformer_out"]) < FP32_TOL
    assert rel_err(q.to(REFERENCE_CAST), fixture.stage[3]["qformer_out_fp16"]) < FP16_TOL


def test_stage4_bim_internals_match(models, fixture, rel_err):
    ref = fixture.stage[4]
    latent_hw = tuple(ref["modulated_image_features"].shape[-2:])
    with torch.no_grad():
        out = run_bim(models.bridge.bim, ref["bim_in_query_output"], fixture.stage[1]["clip_image_features"], latent_hw)
    assert rel_err(out.points, ref["modulate_head_out"]) < FP32_TOL
    assert rel_err(out.image_pe, ref["image_pe"]) < FP32_TOL
    assert rel_err(out.queries, ref["two_way_queries_out"]) < FP32_TOL
    assert rel_err(out.keys, ref["two_way_keys_out"]) < FP32_TOL
    assert rel_err(out.image_residual, ref["modulated_image_features"]) < FP32_TOL
    assert rel_err(out.text_residual, ref["modulated_SD_features"]) < FP32_TOL
    assert rel_err(out.image_residual.to(REFERENCE_CAST), ref["modulated_image_features_fp16"]) < FP16_TOL


def test_stage4_final_text_conditioning_uses_the_reference_fp16_sum(models, fixture, rel_err):
    ref = fixture.stage[4]
    q16 = fixture.stage[3]["qformer_out_fp16"]
    with torch.no_grad():
        out = run_bim(models.bridge.bim, q16.float(), fixture.stage[1]["clip_image_features"], tuple(ref["modulated_image_features"].shape[-2:]))
    cond = q16 + TEXT_RESIDUAL_WEIGHT * out.text_residual.to(REFERENCE_CAST)
    assert cond.dtype == torch.float16
    assert rel_err(cond, ref["final_text_conditioning_fp16"]) < FP16_TOL
