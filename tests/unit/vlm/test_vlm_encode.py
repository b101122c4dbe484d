"""The MLLM encoder's outputs equal the transformers models' own outputs on the same inputs.

References: for LLaVA-1.5 / LLaVA-NeXT, transformers' ``LlavaProcessor`` / ``LlavaNextProcessor``
(placeholder expansion, anyres included) and the model's forward with ``output_hidden_states=True``;
for Qwen2-VL / Qwen2.5-VL (whose processors need torchvision, absent here), the processor's rule written out
(``Qwen2VLProcessor.replace_image_token``: ``grid_thw.prod() // merge_size**2`` pad tokens) and
``Qwen2VLForConditionalGeneration(output_hidden_states=True)``; ``model.generate`` for the answer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LlavaNextProcessor, LlavaProcessor

from lmm_edit.loaders.vlm.encoder import encode_instruction, split_answer
from lmm_edit.loaders.vlm.load import load_mllm

INSTRUCTION = "make the cup on the left red"
R = 4  # [MM] tokens in these tests
FP32_TOLERANCE = 1e-4


def _image(seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _reference_inputs(bundle, text: str, image: Image.Image) -> dict:
    """Model inputs for ``text`` (one image marker) built the way the family's processor builds them."""
    if bundle.family.name in ("llava-1.5", "llava-next"):
        processor_class = LlavaProcessor if bundle.family.name == "llava-1.5" else LlavaNextProcessor
        processor = processor_class(
            image_processor=bundle.image_processor, tokenizer=bundle.tokenizer, patch_size=14,
            vision_feature_select_strategy="default", num_additional_image_tokens=1,
        )
        return dict(processor(images=image, text=text, return_tensors="pt"))
    image_inputs = bundle.image_processor(images=[image], return_tensors="pt")
    pads = int(image_inputs["image_grid_thw"][0].prod()) // bundle.image_processor.merge_size**2
    text = text.replace("<|image_pad|>", "<|image_pad|>" * pads)
    ids = bundle.tokenizer(text, return_tensors="pt").input_ids
    mm_types = (ids == bundle.model.config.image_token_id).int()
    return dict(
        input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=mm_types,
        pixel_values=image_inputs["pixel_values"], image_grid_thw=image_inputs["image_grid_thw"],
    )


def _prompt(bundle) -> str:
    return bundle.family.default_template.replace("{image}", bundle.image_marker).replace("{instruction}", INSTRUCTION)


@pytest.fixture(scope="module", params=["tiny_llava_folder", "tiny_qwen2_vl_folder"])
def bundle(request):
    return load_mllm(request.getfixturevalue(request.param), num_mm_tokens=R)


@pytest.fixture(
    scope="module",
    params=["tiny_llava_folder", "tiny_llava_next_folder", "tiny_qwen2_vl_folder", "tiny_qwen2_5_vl_folder"],
)
def any_family(request):
    return load_mllm(request.getfixturevalue(request.param), num_mm_tokens=R)


def test_mm_states_are_the_last_layer_states_of_mm_tokens_appended_to_the_prompt(any_family):
    bundle = any_family
    image = _image()
    mm_text = "".join(f"[MM_{k}]" for k in range(R))
    reference = _reference_inputs(bundle, _prompt(bundle) + mm_text, image)
    with torch.no_grad():
        expected = bundle.model(**reference, output_hidden_states=True).hidden_states[-1][0, -R:]

    result = encode_instruction(bundle, image, INSTRUCTION)

    assert result.hidden_states.shape == (R, bundle.model.config.text_config.hidden_size)
    torch.testing.assert_close(result.hidden_states, expected, atol=FP32_TOLERANCE, rtol=FP32_TOLERANCE)
    assert result.forced and not result.image_tokens_in_order
    assert result.family == bundle.family.name and result.text == "" and result.token_ids.numel() == 0


def test_vision_features_are_the_towers_unprojected_patch_features(any_family):
    bundle = any_family
    image = _image()
    pixels = bundle.image_processor(images=[image], return_tensors="pt")
    with torch.no_grad():
        if bundle.family.name.startswith("llava"):
            base_image = pixels["pixel_values"].reshape(-1, 3, 28, 28)[:1]  # NeXT: the first crop is the whole image
            tower = bundle.model.model.vision_tower(base_image, output_hidden_states=True)
            expected = tower.hidden_states[-2][0, 1:]  # vision_feature_layer -2, CLS dropped ("default")
        else:
            expected = bundle.model.model.visual(pixels["pixel_values"], grid_thw=pixels["image_grid_thw"])
            expected = expected.last_hidden_state  # patch features before the 2x2 merger

    result = encode_instruction(bundle, image, INSTRUCTION)

    torch.testing.assert_close(result.vision_features, expected, atol=FP32_TOLERANCE, rtol=FP32_TOLERANCE)


def test_greedy_answer_is_what_generate_writes_and_mm_tokens_follow_it(bundle):
    image = _image(1)
    reference = _reference_inputs(bundle, _prompt(bundle), image)
    with torch.no_grad():
        written = bundle.model.generate(**reference, max_new_tokens=6, do_sample=False)
    written = written[0, reference["input_ids"].shape[1] :]
    split = split_answer(written.tolist(), bundle.mm_token_ids, [bundle.model.generation_config.eos_token_id])
    answer_text = bundle.tokenizer.decode(split.text_ids, skip_special_tokens=True)
    # prompt ids + the answer's ids + [MM_0..MM_{r-1}] (ids, not re-tokenised text: random bytes do not round-trip)
    tail = torch.tensor([split.text_ids + bundle.mm_token_ids])
    with_answer = dict(reference, input_ids=torch.cat([reference["input_ids"], tail], dim=1))
    with_answer["attention_mask"] = torch.ones_like(with_answer["input_ids"])
    if "mm_token_type_ids" in reference:
        with_answer["mm_token_type_ids"] = torch.cat([reference["mm_token_type_ids"], torch.zeros_like(tail).int()], 1)
    with torch.no_grad():
        expected_states = bundle.model(**with_answer, output_hidden_states=True).hidden_states[-1][0, -R:]
    seen: list[tuple[int, int]] = []

    result = encode_instruction(bundle, image, INSTRUCTION, max_new_tokens=6, force_image_tokens=True,
                                on_token=lambda step, token: seen.append((step, token)))

    assert result.token_ids.tolist() == written.tolist() == [token for _, token in seen]
    assert [step for step, _ in seen] == list(range(len(seen)))
    assert result.text == answer_text.strip()
    torch.testing.assert_close(result.hidden_states, expected_states, atol=FP32_TOLERANCE, rtol=FP32_TOLERANCE)


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(bundle):
    image = _image(2)
    state = torch.get_rng_state()
    first = encode_instruction(bundle, image, INSTRUCTION, max_new_tokens=8, temperature=1.0, seed=7)
    again = encode_instruction(bundle, image, INSTRUCTION, max_new_tokens=8, temperature=1.0, seed=7)
    other = encode_instruction(bundle, image, INSTRUCTION, max_new_tokens=8, temperature=1.0, seed=8)

    assert torch.equal(torch.get_rng_state(), state)
    assert first.token_ids.tolist() == again.token_ids.tolist() != other.token_ids.tolist()


def test_comfy_image_row_gives_the_same_result_as_the_pil_image(bundle):
    image = _image(3)
    row = torch.from_numpy(np.array(image)).float() / 255.0  # ComfyUI IMAGE row [H, W, 3] in [0, 1]
    from_pil = encode_instruction(bundle, image, INSTRUCTION)
    from_tensor = encode_instruction(bundle, row, INSTRUCTION)
    torch.testing.assert_close(from_tensor.hidden_states, from_pil.hidden_states, atol=0, rtol=0)


def test_mm_tokens_the_model_writes_in_order_are_its_own_states(bundle, monkeypatch):
    # The tiny random model never writes [MM] tokens; stand in for a trained one's free-running output.
    eos = bundle.model.generation_config.eos_token_id
    answer = bundle.tokenizer("ab", add_special_tokens=False).input_ids
    stream = answer + bundle.mm_token_ids + [eos if isinstance(eos, int) else eos[0]]
    monkeypatch.setattr(
        bundle.model, "generate", lambda input_ids, **kw: torch.cat([input_ids, torch.tensor([stream])], dim=1)
    )
    image = _image(4)
    reference = _reference_inputs(bundle, _prompt(bundle) + "ab" + "".join(f"[MM_{k}]" for k in range(R)), image)
    with torch.no_grad():
        expected = bundle.model(**reference, output_hidden_states=True).hidden_states[-1][0, -R:]

    result = encode_instruction(bundle, image, INSTRUCTION, max_new_tokens=8, force_image_tokens=False)

    assert result.image_tokens_in_order and not result.forced and result.text == "ab"
    assert result.token_ids.tolist() == stream
    torch.testing.assert_close(result.hidden_states, expected, atol=FP32_TOLERANCE, rtol=FP32_TOLERANCE)


def test_without_forcing_a_model_that_writes_no_mm_tokens_is_reported_not_raised(bundle):
    result = encode_instruction(bundle, _image(), INSTRUCTION, max_new_tokens=4, force_image_tokens=False)

    assert result.hidden_states.shape[0] == 0 and not result.forced and not result.image_tokens_in_order
    assert "0 image tokens instead of the 4 [MM_0]..[MM_3]" in result.extras["problem"]
    assert "force_image_tokens" in result.extras["problem"]


MM = [100, 101, 102]
EOS = [2]


def test_split_answer_recognises_mm_tokens_written_in_order():
    split = split_answer([5, 6, 100, 101, 102, 2, 9], MM, EOS)
    assert (split.text_ids, split.mm_run, split.in_order) == ([5, 6], [100, 101, 102], True)


def test_split_answer_flags_mm_tokens_out_of_order_or_missing():
    assert not split_answer([5, 101, 100, 102], MM, EOS).in_order
    assert split_answer([5, 6, 2, 100, 101, 102], MM, EOS).mm_run == []  # after EOS: never written
    assert split_answer([5, 100, 101], MM, EOS).mm_run == [100, 101]
