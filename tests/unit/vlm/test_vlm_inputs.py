"""The VLM encoders refuse instructions they cannot read as text and images they cannot see; every other
ComfyUI image (gray, RGBA, down to 1x1) is encoded. The tiny models' context is 512 tokens (vlm_models.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lmm_edit.loaders.instruction import InstructionError
from lmm_edit.loaders.vlm.encoder import encode_instruction
from lmm_edit.loaders.vlm.inputs import as_pil_image
from lmm_edit.loaders.vlm.load import load_mllm

FAMILIES = ["tiny_llava_folder", "tiny_llava_next_folder", "tiny_qwen2_vl_folder", "tiny_qwen2_5_vl_folder"]
PLACEHOLDERS = {"llava-1.5": "<image>", "llava-next": "<image>", "qwen2-vl": "<|image_pad|>",
                "qwen2.5-vl": "<|vision_start|>"}
R = 4


@pytest.fixture(scope="module", params=FAMILIES)
def bundle(request):
    return load_mllm(request.getfixturevalue(request.param), num_mm_tokens=R)


def _image(h: int = 20, w: int = 30, channels: int = 3) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).random((1, h, w, channels), dtype=np.float32))


def _refusal(bundle, instruction: str) -> str:
    with pytest.raises(InstructionError) as caught:
        encode_instruction(bundle, _image(), instruction)
    return str(caught.value)


def test_an_instruction_longer_than_the_context_is_refused_with_both_lengths(bundle):
    message = _refusal(bundle, "make it red " * 60)  # 720 byte tokens: over the tiny models' 512
    assert f"too long for the {bundle.family.name} model" in message and "context is 512 tokens" in message
    assert "the instruction alone is 720 tokens" in message and f"then the {R} [MM] tokens" in message
    needed = int(message.split("the prompt needs ")[1].split(" ")[0])
    assert f"shorten the instruction by at least {needed - 512} tokens" in message


def test_an_instruction_that_just_fits_is_encoded(bundle):
    result = encode_instruction(bundle, _image(), "make it red " * 20)
    assert result.hidden_states.shape[0] == R


def test_a_lone_surrogate_is_refused_naming_its_position(bundle):
    message = _refusal(bundle, "make \udfff it red")
    assert "character 5" in message and "U+DFFF" in message and "Fix:" in message


def test_the_models_image_placeholder_in_the_instruction_is_the_instructions_problem(bundle):
    token = PLACEHOLDERS[bundle.family.name]
    message = _refusal(bundle, f"put {token} here")
    assert f"{token!r} at character 4" in message and f"{bundle.family.name} model's own placeholder tokens" in message
    assert f"Fix: remove {token}" in message


def test_the_mm_tokens_in_the_instruction_are_refused(bundle):
    message = _refusal(bundle, "write [MM_2] now")
    assert "'[MM_2]' at character 6" in message


@pytest.mark.parametrize(("h", "w", "channels"), [(1, 1, 3), (1, 1, 1), (3, 2, 4), (17, 9, 2)])
def test_gray_rgba_and_tiny_images_are_encoded(bundle, h, w, channels):
    result = encode_instruction(bundle, _image(h, w, channels), "make it red")
    assert result.hidden_states.shape[0] == R and result.hidden_states.isfinite().all()
    assert result.vision_features.isfinite().all()


def test_images_reach_the_processor_at_their_own_size_in_rgb(bundle):
    assert as_pil_image(bundle, _image(1, 3, 2)).size == (3, 1)  # the processor resizes, nothing is cropped
    assert as_pil_image(bundle, Image.new("L", (40, 20))).mode == "RGB"


@pytest.mark.parametrize("folder", ["tiny_qwen2_vl_folder", "tiny_qwen2_5_vl_folder"])
def test_an_image_the_processor_cannot_take_is_named(request, folder):
    bundle = load_mllm(request.getfixturevalue(folder), num_mm_tokens=R)  # Qwen's smart_resize: aspect ratio <= 200
    with pytest.raises(ValueError, match=r"VLM \(image input\): the 201x1 px image cannot be prepared.*Fix: crop"):
        encode_instruction(bundle, _image(1, 201), "make it red")


@pytest.mark.parametrize(("image", "problem"), [
    (torch.zeros(1, 0, 8, 3), "the image input is empty"),
    (torch.full((1, 4, 4, 3), float("nan")), "holds 48 NaN or infinite values"),
    (Image.new("RGB", (0, 5)), "the image is empty (0x5 px)"),
])
def test_empty_or_non_finite_images_are_refused_by_name(bundle, image, problem):
    with pytest.raises(ValueError) as caught:
        encode_instruction(bundle, image, "make it red")
    message = str(caught.value)
    assert message.startswith(f"{bundle.family.name} VLM (image input): ") and problem in message and "Fix:" in message
