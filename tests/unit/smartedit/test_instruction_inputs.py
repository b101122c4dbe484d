"""SmartEdit's LMM refuses instructions it cannot read as text and images it cannot see, and takes every other
ComfyUI image (gray, RGBA, down to 1x1) as RGB; the fixture's LLaVA config gives the 2048-token context."""

from __future__ import annotations

import pytest
import torch

from lmm_edit.loaders.instruction import InstructionError
from lmm_edit.loaders.smartedit.encoder import encode_instruction
from lmm_edit.loaders.smartedit.vision import CLIP_MEAN, CLIP_STD, clip_pixels

GRAY = torch.full((1, 16, 16, 1), 0.5)


def _refusal(models, instruction: str) -> str:
    with pytest.raises(InstructionError) as caught:
        encode_instruction(models.lmm, GRAY, instruction, template=0)
    return str(caught.value)


def test_the_context_comes_from_the_llava_config(models):
    assert models.lmm.info.context == 2048  # LLaVA-7B-v1 config.json max_position_embeddings


def test_an_instruction_longer_than_the_context_is_refused_with_both_lengths(models):
    message = _refusal(models, "make the cat red and " * 400)
    assert "too long for the llava-1.1 model" in message and "context is 2048 tokens" in message
    assert "with 256 image features, then the 32 image tokens <img_0>..<img_31>" in message
    needed = int(message.split("the prompt needs ")[1].split(" ")[0])
    assert needed > 2048 and f"shorten the instruction by at least {needed - 2048} tokens" in message


def test_a_lone_surrogate_is_refused_naming_its_position(models):
    message = _refusal(models, "make it \ud800red")
    assert "character 8" in message and "U+D800" in message and "Fix:" in message


@pytest.mark.parametrize("token", ["<img_5>", "<im_start>", "<img>", "</s>"])
def test_smartedits_own_tokens_in_the_instruction_are_the_instructions_problem(models, token):
    message = _refusal(models, f"make it red {token} please")
    assert f"{token!r} at character 12" in message and f"Fix: remove {token}" in message


@pytest.mark.parametrize("image", [
    torch.full((1, 5, 7, 1), 0.25),  # gray
    torch.cat([torch.full((1, 5, 7, 3), 0.25), torch.zeros(1, 5, 7, 1)], dim=-1),  # RGBA, alpha dropped
    torch.full((1, 1, 1, 3), 0.25),  # 1x1, resized up
])
def test_gray_rgba_and_tiny_images_give_the_rgb_clip_pixels(image):
    pixels = clip_pixels(image, 224)
    expected = ((64 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)).view(1, 3, 1, 1).expand(1, 3, 224, 224)
    torch.testing.assert_close(pixels, expected)


@pytest.mark.parametrize(("image", "problem"), [
    (torch.zeros(1, 0, 8, 3), "the image input is empty"),
    (torch.full((1, 8, 8, 3), float("nan")), "holds 192 NaN or infinite values"),
    (torch.full((8, 8, 3), float("inf")), "holds 192 NaN or infinite values"),
])
def test_empty_or_non_finite_images_are_refused_by_name(image, problem):
    with pytest.raises(ValueError) as caught:
        clip_pixels(image, 224)
    message = str(caught.value)
    assert message.startswith("SmartEdit LMM (CLIP image input): ") and problem in message and "Fix:" in message


def test_a_one_pixel_gray_image_is_encoded(models):
    result = encode_instruction(models.lmm, torch.full((1, 1, 1, 1), 0.5), "make it red", template=0,
                                force_image_tokens=True)
    assert result.hidden_states.shape[0] == 32 and result.hidden_states.isfinite().all()
