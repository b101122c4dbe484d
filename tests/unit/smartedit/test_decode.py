"""Decode-loop behaviour (reference: test/DS_SmartEdit_test.py get_prompt_embedding_LLM) and the LLaMA against
transformers' LlamaModel on other weights (the factory's, another seed)."""

from __future__ import annotations

import pytest
import torch

from lmm_edit.loaders.smartedit import encode_instruction, load_smartedit
from lmm_edit.loaders.smartedit.decode import MAX_KEPT_STATES, decode_image_states
from lmm_edit.selfcheck.smartedit_release import write_smartedit_release

FP32_TOL = 1e-4


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    paths = write_smartedit_release(tmp_path_factory.mktemp("release"), seed=11, safetensors_copies=False)
    return paths, load_smartedit(paths.bundle, paths.llava, paths.clip, qformer_heads=paths.qformer_heads)


def _prompt(models, length: int = 20) -> torch.Tensor:
    return models.lmm.llm.embed_tokens(torch.arange(3, 3 + length).unsqueeze(0))


def test_sampling_is_reproducible_from_the_seed(release):
    _, models = release
    info = models.lmm.info
    with torch.no_grad():
        runs = [decode_image_states(models.lmm.llm, _prompt(models), info.image_token_ids, info.eos_id, temperature=0.7, seed=s, max_new_tokens=12) for s in (5, 5, 6)]
    assert runs[0].token_ids == runs[1].token_ids
    assert runs[0].token_ids != runs[2].token_ids


def test_greedy_picks_the_argmax_of_each_step(release):
    _, models = release
    info = models.lmm.info
    result = decode_image_states(models.lmm.llm, _prompt(models), info.image_token_ids, info.eos_id, max_new_tokens=6)
    with torch.no_grad():
        logits = models.lmm.llm.logits(result.step_states)
    assert result.token_ids == logits.argmax(-1).tolist()


def test_forced_mode_appends_the_32_image_tokens_then_eos(release):
    _, models = release
    info = models.lmm.info
    calls = []
    result = decode_image_states(
        models.lmm.llm, _prompt(models), info.image_token_ids, info.eos_id, force_image_tokens=True,
        max_new_tokens=80, on_token=lambda step, token: calls.append((step, token)),
    )
    tail = result.token_ids[-33:]
    assert tail == [*info.image_token_ids, info.eos_id]
    assert result.kept_states.shape[0] == len(info.image_token_ids)
    assert [t for _, t in calls] == result.token_ids and [s for s, _ in calls] == list(range(len(calls)))


def test_loop_stops_after_35_kept_states_like_the_reference(release):
    _, models = release
    info = models.lmm.info
    teacher = [info.image_token_ids[0]] * 50  # a model repeating an image token
    result = decode_image_states(models.lmm.llm, _prompt(models), info.image_token_ids, info.eos_id, teacher_ids=teacher)
    assert result.kept_states.shape[0] == MAX_KEPT_STATES
    assert len(result.token_ids) == MAX_KEPT_STATES + 1


def test_text_tokens_between_image_tokens_are_not_kept(release):
    _, models = release
    info = models.lmm.info
    text = 5
    teacher = [info.image_token_ids[0], text, info.image_token_ids[1], info.eos_id]
    result = decode_image_states(models.lmm.llm, _prompt(models), info.image_token_ids, info.eos_id, teacher_ids=teacher)
    assert torch.equal(result.kept_states, result.step_states[[1, 3]])


def test_cached_decoding_equals_transformers_llama_full_forward(release):
    from transformers import LlamaConfig, LlamaModel

    _, models = release
    llm, info = models.lmm.llm, models.lmm.info
    c = llm.config
    reference = LlamaModel(LlamaConfig(
        hidden_size=c.hidden, num_hidden_layers=c.layers, num_attention_heads=c.heads, intermediate_size=c.intermediate,
        vocab_size=c.vocab, rms_norm_eps=c.rms_eps, rope_theta=10000.0, max_position_embeddings=2048,
    )).eval()
    reference.load_state_dict({k: v for k, v in llm.state_dict().items() if not k.startswith(("lm_head", "inv_freq"))}, strict=True)
    teacher = [*info.image_token_ids[:4], info.eos_id]
    prompt = _prompt(models, 30)
    result = decode_image_states(llm, prompt, info.image_token_ids, info.eos_id, teacher_ids=teacher)
    with torch.no_grad():
        full = torch.cat([prompt, llm.embed_tokens(torch.tensor([teacher[:-1]]))], dim=1)
        ref = reference(inputs_embeds=full).last_hidden_state[0, prompt.shape[1] - 1 :]
    assert (result.step_states - ref).abs().max() / ref.abs().max() < FP32_TOL


def test_encode_reports_when_the_model_does_not_emit_32_image_tokens(release):
    _, models = release
    image = torch.rand(40, 60, 3)
    free = encode_instruction(models.lmm, image, "make it red", seed=0)
    forced = encode_instruction(models.lmm, image, "make it red", seed=0, force_image_tokens=True)
    assert not free.image_tokens_in_order and "problem" in free.extras
    assert forced.hidden_states.shape[0] == len(models.lmm.info.image_token_ids) and forced.forced
    assert not forced.image_tokens_in_order and "problem" not in forced.extras
