"""InstructAny2Pix's LLM refuses instructions it cannot read as text (its own tokens typed in, lone surrogates,
a prompt over its context, 256 positions in the fixture's config.json) and ImageBind refuses images it
cannot see, taking gray, RGBA and 1x1 pictures as RGB."""

from __future__ import annotations

import pytest
import torch

from lmm_edit.loaders.any2pix.imagebind_vision_input import IMAGE_SIZE, to_pil_rgb, vision_input
from lmm_edit.loaders.any2pix.llm_encode import encode_instruction
from lmm_edit.loaders.any2pix.markers import parse_markers
from lmm_edit.loaders.instruction import InstructionError


def _refusal(fx, llm, settings, instruction: str) -> str:
    model, tokenizer = llm
    with pytest.raises(InstructionError) as caught:
        encode_instruction(model, tokenizer, instruction, fx.aux, fx.input_kinds(), settings)
    return str(caught.value)


def test_the_context_comes_from_the_llm_config(llm):
    assert llm[0].config.context == 256  # the fixture's llm-retrained/config.json max_position_embeddings


def test_an_instruction_longer_than_the_context_is_refused_with_both_lengths(fx, llm, settings):
    message = _refusal(fx, llm, settings, fx.instruction(llm[1]) + " and make it shine" * 60)
    assert "too long for the InstructAny2Pix model" in message and "context is 256 tokens" in message
    assert "then at least the answer's <im_gen>" in message
    needed = int(message.split("the prompt needs ")[1].split(" ")[0])
    assert f"shorten the instruction by at least {needed - 256} tokens" in message


def test_a_lone_surrogate_is_refused_naming_its_position(fx, llm, settings):
    message = _refusal(fx, llm, settings, "\ud83d" + fx.instruction(llm[1]))
    assert "character 0" in message and "U+D83D" in message and "Fix:" in message


@pytest.mark.parametrize("token", ["<im_gen>", "<base>", "<audio>", "</s>"])
def test_the_llms_own_tokens_in_the_instruction_are_the_instructions_problem(fx, llm, settings, token):
    message = _refusal(fx, llm, settings, f"{token} " + fx.instruction(llm[1]))
    assert f"{token!r} at character 0" in message and f"Fix: remove {token}" in message


@pytest.mark.parametrize("token", ["<video>", "<im_gen>", "<s>"])
def test_typed_tokens_are_refused_before_the_markers_are_read(token):
    with pytest.raises(InstructionError) as caught:
        parse_markers(f"add [audio1] to [image1] {token}", {("image", 1), ("audio", 1)})
    message = str(caught.value)
    assert f"{token!r} at character 25" in message and "InstructAny2Pix model's own placeholder tokens" in message


def test_markers_alone_pass_and_a_surrogate_is_refused_there_too():
    assert parse_markers("add [audio1] to [image1]", {("image", 1), ("audio", 1)}).text == "add <video> to <video>"
    with pytest.raises(InstructionError, match="character 4"):
        parse_markers("add \ud800[image1]", {("image", 1)})


@pytest.mark.parametrize("row", [
    torch.full((1, 1, 1), 0.5),  # 1x1 gray
    torch.full((2, 3, 4), 0.5),  # RGBA
    torch.full((1, 1, 1, 3), 0.5),  # a one-image IMAGE batch
    torch.full((5, 5, 3), 128, dtype=torch.uint8),  # 8-bit row
])
def test_gray_rgba_tiny_and_8_bit_pictures_become_224_px_rgb(row):
    assert to_pil_rgb(row).mode == "RGB"
    pixels = vision_input([row])
    assert pixels.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE) and pixels.isfinite().all()
    torch.testing.assert_close(pixels[0, :, 0, 0], pixels[0, :, -1, -1])  # a flat picture stays flat


@pytest.mark.parametrize(("row", "problem"), [
    (torch.zeros(0, 4, 3), "the image input is empty"),
    (torch.full((4, 4, 3), float("nan")), "holds 48 NaN or infinite values"),
])
def test_empty_or_non_finite_pictures_are_refused_by_name(row, problem):
    with pytest.raises(ValueError) as caught:
        vision_input([row])
    message = str(caught.value)
    assert message.startswith("InstructAny2Pix ImageBind (image input): ") and problem in message and "Fix:" in message
