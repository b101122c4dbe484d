"""Answer parsing, the caption rule and the base-image rule (reference: pipeline.py forward_llm), on the
fixture's answer and on answers built from the fixture's tokenizer."""

from __future__ import annotations

import pytest
import torch

from lmm_edit.loaders.any2pix.answer import AnswerError, answer_steps, caption_of, choose_base


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_bos=False)


def test_fixture_answer_steps(fx, llm, forced_run):
    _, tokenizer = llm
    answer = fx.forced_ids
    ids = tokenizer.ids
    last_im_gen = max(k for k, t in enumerate(answer) if t == ids.im_gen)
    first_video_after = next(k for k, t in enumerate(answer) if t == ids.video and k > last_im_gen)
    assert forced_run.steps.gen == first_video_after
    assert forced_run.steps.base == answer.index(ids.base) + 1
    assert forced_run.steps.extras == ()


def test_answer_without_im_gen_is_a_clear_error(llm):
    _, tokenizer = llm
    answer = _ids(tokenizer, "I cannot do that.</s>")
    with pytest.raises(AnswerError, match="without <im_gen>.*I cannot do that"):
        answer_steps(answer, tokenizer.ids, tokenizer.decode(answer))


def test_later_video_tokens_are_subject_embeddings(llm):
    _, tokenizer = llm
    answer = _ids(tokenizer, "ok<base><video><im_gen>[a cat]<video> additions:cat:<video>.</s>")
    steps = answer_steps(answer, tokenizer.ids, "")
    videos = [k for k, t in enumerate(answer) if t == tokenizer.ids.video]
    assert steps.gen == videos[1] and steps.extras == (videos[2],)


def test_caption_is_the_first_bracket_group_of_the_whole_sequence_unless_asked_otherwise():
    full = "USER: make it like [this] ASSISTANT: ok<im_gen> [a red clock]<video></s>"
    answer = "ok<im_gen> [a red clock]<video></s>"
    assert caption_of(full, answer) == "this"  # the reference's rule (README quirk 9)
    assert caption_of(full, answer, source="answer") == "a red clock"
    with pytest.raises(AnswerError, match="no \\[caption\\]"):
        caption_of("no brackets", "no brackets")


def test_base_is_chosen_among_images_when_the_argmax_is_an_audio():
    aux = torch.tensor([[20.0, 0.0], [0.0, 20.0]])
    predicted = torch.tensor([[0.1, 3.0]])  # closest to input 1
    choice = choose_base(predicted, aux, ["image", "audio"])
    assert choice.reference_index == 1  # the reference would open the audio file as an image
    assert choice.index == 0 and torch.equal(choice.embed, predicted)
    same = choose_base(predicted, aux, ["audio", "image"])
    assert same.index == same.reference_index == 1


def test_one_input_is_its_own_base_and_no_base_token_falls_back_to_the_first_image():
    aux = torch.tensor([[20.0, 0.0], [0.0, 20.0]])
    single = choose_base(None, aux[:1], ["image"])
    assert single.index == 0 and torch.equal(single.embed, aux[0])
    fallback = choose_base(None, aux, ["audio", "image"])
    assert fallback.index == 1 and torch.equal(fallback.embed, aux[1:2])
    assert choose_base(None, aux[:1], ["audio"]).index is None
