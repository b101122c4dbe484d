"""Every LMM family answers the same encoder call the same way (loaders/encoder.py), without ComfyUI.

SmartEdit's LLaVA-1.1 and a transformers VLM, both with tiny random weights (selfcheck builders): the same
EncodeOptions, progress callbacks numbered the same way, bad token output reported in the status (never
raised), forcing that yields the trained number of states.
"""

from __future__ import annotations

import re

import pytest
import torch

from lmm_edit.loaders.encoder import AUTO_TEMPLATE, EncodeOptions, InstructionEncoder
from lmm_edit.loaders.smartedit import TEMPLATE_CHOICES, SmartEditEncoder, load_smartedit
from lmm_edit.loaders.vlm import VLMEncoder, load_mllm
from lmm_edit.selfcheck.smartedit_release import write_smartedit_release
from lmm_edit.selfcheck.vlm_models import write_tiny_llava

INSTRUCTION = "make the sky red"
NUM_MM_TOKENS = 4


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict[str, tuple[InstructionEncoder, int]]:
    """family -> (encoder, the number of image tokens it trains)."""
    paths = write_smartedit_release(tmp_path_factory.mktemp("release"), seed=3, safetensors_copies=False)
    lmm = load_smartedit(paths.bundle, paths.llava, paths.clip, qformer_heads=paths.qformer_heads).lmm
    vlm = load_mllm(write_tiny_llava(tmp_path_factory.mktemp("llava")), NUM_MM_TOKENS)
    return {"smartedit": (SmartEditEncoder(lmm), len(lmm.info.image_token_ids)),
            "vlm": (VLMEncoder(vlm), NUM_MM_TOKENS)}


def _image() -> torch.Tensor:
    return torch.rand(40, 48, 3, generator=torch.Generator().manual_seed(0))  # one ComfyUI IMAGE row


@pytest.mark.parametrize("family", ["smartedit", "vlm"])
def test_both_families_implement_the_protocol(encoders, family):
    encoder, _ = encoders[family]
    assert isinstance(encoder, InstructionEncoder)
    assert encoder.memory_required() >= 0


@pytest.mark.parametrize("family", ["smartedit", "vlm"])
def test_bad_token_output_is_reported_in_the_status_not_raised(encoders, family):
    encoder, _ = encoders[family]
    steps: list[int] = []
    options = EncodeOptions(seed=1, temperature=0.0, force_image_tokens=False, on_token=lambda s, t: steps.append(s))

    result = encoder.encode(_image(), INSTRUCTION, options)

    assert not result.image_tokens_in_order and not result.forced  # random weights write no trained answer
    first, template, answer = result.status[:3]
    assert first.startswith("WARNING:") and "force_image_tokens" in first
    assert template.startswith("Template") and answer == f"Answer: {result.text}"
    assert steps == list(range(len(result.token_ids)))


@pytest.mark.parametrize("family", ["smartedit", "vlm"])
def test_forcing_gives_the_trained_number_of_states(encoders, family):
    encoder, expected = encoders[family]

    result = encoder.encode(_image(), INSTRUCTION, EncodeOptions(seed=1, force_image_tokens=True))

    assert result.forced and result.hidden_states.shape[0] == expected
    assert result.status[0].startswith("Image tokens forced")


def test_a_smartedit_template_choice_is_used_by_smartedit_and_refused_by_a_vlm(encoders):
    choice = TEMPLATE_CHOICES[5]  # "05: ..."
    smartedit, _ = encoders["smartedit"]
    result = smartedit.encode(_image(), INSTRUCTION, EncodeOptions(template=choice, force_image_tokens=True))
    assert result.status[1] == f"Template {choice}"

    vlm, _ = encoders["vlm"]
    with pytest.raises(ValueError, match=re.escape(f"uses its own template. Set template to '{AUTO_TEMPLATE}'")):
        vlm.encode(_image(), INSTRUCTION, EncodeOptions(template=choice))
