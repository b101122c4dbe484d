"""What a VLM encoder takes from the user, checked before the model runs: the image and the instruction.

- the image: a PIL image or a ComfyUI IMAGE (gray, RGBA, any size down to 1x1) -> 8-bit RGB PIL
  (``pixels.rgb_pil``) at its own size; the family's image processor resizes it (CLIP: short side to the tower's
  size; Qwen2-VL's ``smart_resize``: up to ``min_pixels``, which takes 1x1 since transformers 5); empty or
  non-finite images are refused, and an image the processor refuses (Qwen: aspect ratio over 200) is named;
- the instruction: text with no UTF-8 form and the model's own special tokens (``<image>``, ``<|im_start|>``,
  ``[MM_k]`` ...) are refused (``instruction.py``), and so is a prompt longer than the LLM's context
  (``max_position_embeddings`` of its text config), counting the expanded image tokens and the ``[MM]`` tokens.
"""

from __future__ import annotations

import torch
from PIL import Image

from ..instruction import check_context, check_encodable, check_placeholders
from ..pixels import rgb_pil
from .load import MLLMBundle, run_device

IMAGE_INPUT_KEYS = ("pixel_values", "image_sizes", "image_grid_thw")  # what the families' forwards take


def image_input_name(bundle: MLLMBundle) -> str:
    return f"{bundle.family.name} VLM (image input)"


def as_pil_image(bundle: MLLMBundle, image: Image.Image | torch.Tensor) -> Image.Image:
    """The encoder's image as RGB PIL at its own size (``pixels.rgb_pil``), for the family's processor."""
    return rgb_pil(image, image_input_name(bundle))


def image_inputs(bundle: MLLMBundle, image: Image.Image) -> dict[str, torch.Tensor]:
    """The processor's tensors for one image, on the model's device (pixel values in its dtype)."""
    try:
        processed = bundle.image_processor(images=[image], return_tensors="pt")
    except ValueError as err:  # e.g. Qwen2-VL's smart_resize: an aspect ratio above 200
        raise ValueError(
            f"{image_input_name(bundle)}: the {image.width}x{image.height} px image cannot be prepared for this "
            f"model ({err}). Fix: crop or pad the image to a less extreme shape before this node."
        ) from err
    device = run_device(bundle.model)
    inputs = {k: processed[k].to(device) for k in IMAGE_INPUT_KEYS if k in processed}
    inputs["pixel_values"] = inputs["pixel_values"].to(bundle.model.dtype)
    return inputs


def reserved_tokens(bundle: MLLMBundle) -> list[str]:
    """The tokenizer's special tokens (its own and the added ones, ``[MM_k]`` included): never text."""
    tokenizer = bundle.tokenizer
    added = [token.content for token in tokenizer.added_tokens_decoder.values() if token.special]
    return sorted({*tokenizer.all_special_tokens, *added, *tokenizer.convert_ids_to_tokens(bundle.mm_token_ids)})


def check_instruction_text(bundle: MLLMBundle, instruction: str) -> None:
    """Refuse text with no UTF-8 form and the model's special tokens inside the instruction."""
    check_encodable(instruction)
    check_placeholders(instruction, reserved_tokens(bundle), bundle.family.name)


def context_length(bundle: MLLMBundle) -> int:
    return int(bundle.model.config.get_text_config().max_position_embeddings)


def check_prompt_length(bundle: MLLMBundle, prompt_ids: torch.Tensor, image_tokens: int, instruction: str) -> None:
    """Refuse a prompt (``prompt_ids``, image placeholder expanded) that with the ``[MM]`` tokens exceeds the context."""
    mm = len(bundle.mm_token_ids)
    instruction_tokens = len(bundle.tokenizer(instruction, add_special_tokens=False).input_ids)
    check_context(
        int(prompt_ids.shape[0]) + mm, context_length(bundle), instruction_tokens,
        f"{int(prompt_ids.shape[0])} of prompt with {image_tokens} image tokens, then the {mm} [MM] tokens",
        bundle.family.name,
    )
