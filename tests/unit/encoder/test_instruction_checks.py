"""The instruction checks every encoder shares (loaders/instruction.py): each message names the problem and the fix."""

from __future__ import annotations

import pytest

from lmm_edit.loaders.instruction import InstructionError, check_context, check_encodable, check_placeholders


def test_a_lone_surrogate_is_named_with_its_position():
    with pytest.raises(InstructionError) as caught:
        check_encodable("make the sky \ud800 blue")
    message = str(caught.value)
    assert "character 13" in message and "U+D800" in message and "'make the sky '" in message
    assert "Fix: retype that part" in message


def test_text_with_a_utf8_form_passes():
    check_encodable("make it red \u00e9\U0001f600 \u4e2d\u6587")  # accents, emoji, CJK


def test_the_models_own_tokens_are_named_in_order_of_appearance():
    with pytest.raises(InstructionError) as caught:
        check_placeholders("put <img_3> here and <image> there", ["<image>", "<img_3>", "<s>"], "llava-1.5")
    message = str(caught.value)
    assert "'<img_3>' at character 4, '<image>' at character 21" in message
    assert "llava-1.5 model's own placeholder tokens" in message and "Fix: remove <img_3>, <image>" in message


def test_an_instruction_without_reserved_tokens_passes():
    check_placeholders("make the <b>cat</b> red [sic]", ["<image>", "<img_0>"], "llava-1.5")


def test_a_prompt_longer_than_the_context_gives_both_lengths_and_the_excess():
    with pytest.raises(InstructionError) as caught:
        check_context(2100, 2048, 1900, "2068 of prompt, then 32 image tokens", "llava-1.1")
    message = str(caught.value)
    assert "needs 2100 tokens (2068 of prompt, then 32 image tokens)" in message
    assert "context is 2048 tokens" in message and "instruction alone is 1900 tokens" in message
    assert "Fix: shorten the instruction by at least 52 tokens" in message
    check_context(2048, 2048, 1848, "fits exactly", "llava-1.1")
