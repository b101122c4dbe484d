"""The sampler against transformers' own sampling path, built the way transformers 4.34.1 `generate` builds it.

Reference compared against: the installed transformers' `TemperatureLogitsWarper`, `TopKLogitsWarper` and
`TopPLogitsWarper` (their `__call__` is unchanged from 4.34.1), assembled in 4.34.1's
`GenerationMixin._get_logits_warper` order for `do_sample=True, temperature=T` over the folder's
`generation_config.json` (GenerationConfig defaults otherwise: top_k 50, top_p 1.0), then 4.34.1's draw
`torch.multinomial(softmax(scores), 1)`. The stored raw logits of the fixture's 35 answer steps are the input.
A same-seed replay of the reference's answer is impossible (its tokens were forced), so the teacher-forced
states are checked in test_llm_stage2_parity.py instead.
"""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from lmm_edit.loaders.any2pix.sampling import SamplingSettings, decode_answer, next_token, warp_scores
from lmm_edit.loaders.errors import ModelFileError


def _transformers_434_warpers(config: dict, temperature: float) -> LogitsProcessorList:
    """`_get_logits_warper` of transformers 4.34.1 for num_beams 1 (min_tokens_to_keep 1)."""
    top_k, top_p = config.get("top_k", 50), config.get("top_p", 1.0)
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k:
        warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return warpers


@pytest.mark.parametrize("file_config", [{"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0},
                                         {"eos_token_id": 2, "temperature": 0.9, "top_p": 0.6, "do_sample": True}])
def test_warped_scores_equal_transformers_warpers_on_the_stored_logits(fx, file_config):
    logits = fx.stage[2]["llm_raw_logits_per_step"]
    settings = SamplingSettings.from_generation_config(file_config, eos_id=2)
    reference = _transformers_434_warpers(file_config, settings.temperature)
    ids = torch.tensor([fx.prompt_ids])
    for row in logits:
        ours = warp_scores(row[None], settings)
        theirs = reference(ids, row[None].clone())
        assert torch.equal(ours, theirs)


def test_fixture_generation_config_gives_temperature_03_and_top_k_50(fx, settings):
    assert (settings.temperature, settings.top_k, settings.top_p, settings.max_new_tokens) == (0.3, 50, 1.0, 100)
    assert settings.eos_ids == (fx.forced_ids[-1],)  # the answer ends with </s>


def test_draws_equal_multinomial_on_transformers_scores_with_the_same_rng(fx, settings):
    logits = fx.stage[2]["llm_raw_logits_per_step"]
    reference = _transformers_434_warpers({}, settings.temperature)
    ours_rng, their_rng = torch.Generator().manual_seed(1234), torch.Generator().manual_seed(1234)
    for row in logits:
        probs = torch.softmax(reference(None, row[None].clone()), dim=-1)
        expected = int(torch.multinomial(probs, num_samples=1, generator=their_rng)[0, 0])
        assert next_token(row[None], settings, ours_rng) == expected


def test_temperature_zero_is_greedy(fx):
    logits = fx.stage[2]["llm_raw_logits_per_step"]
    greedy = SamplingSettings(temperature=0.0)
    assert [next_token(row[None], greedy, None) for row in logits] == logits.argmax(-1).tolist()


def test_a_processor_that_is_not_reproduced_is_refused():
    with pytest.raises(ModelFileError, match="repetition_penalty"):
        SamplingSettings.from_generation_config({"repetition_penalty": 1.2}, eos_id=2)


def test_sampling_stops_at_eos_and_is_reproducible_with_a_seed(fx, llm, settings):
    model, tokenizer = llm
    ids = torch.tensor([fx.prompt_ids])
    with torch.no_grad():
        embeds = model.prompt_embeddings(ids, fx.aux, tokenizer.ids.video)
    runs = [decode_answer(model, embeds, settings, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert runs[0].answer_ids == runs[1].answer_ids
    answer = runs[0].answer_ids
    assert len(answer) == settings.max_new_tokens or answer[-1] in settings.eos_ids
    assert all(t not in settings.eos_ids for t in answer[:-1])
    assert runs[0].last_hidden.shape == (len(answer), model.config.llama.hidden)
