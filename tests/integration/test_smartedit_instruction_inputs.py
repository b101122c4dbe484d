"""LMMEdit_LMMEncode on SmartEdit's LMM in real ComfyUI: an instruction the LMM cannot read is reported as the
instruction's problem (its own tokens, a prompt over LLaMA-1's 2048-token context) before any decoding, and a
1x1 gray image is encoded (resized up to CLIP's 224 px, never cropped)."""

from __future__ import annotations

import pytest
import torch

from .test_smartedit_nodes import BUNDLE, CLIP_FILE, LLAVA, smartedit_files  # noqa: F401 (the module's fixture)


@pytest.fixture(scope="module")
def lmm(comfyui, smartedit_files):  # noqa: F811
    from lmm_edit.nodes.smartedit_loader import SmartEditLoaderNode

    return SmartEditLoaderNode.execute(BUNDLE, LLAVA, CLIP_FILE, "auto", 0).result[1]


def _encode(lmm, image, instruction):
    from lmm_edit.nodes.encode import AUTO_TEMPLATE, LMMEncodeNode

    return LMMEncodeNode.execute(lmm, image, instruction, 0, 0.0, AUTO_TEMPLATE, True).result


@pytest.mark.parametrize(("instruction", "problem"), [
    ("make <img_0> red", r"'<img_0>' at character 5.*Fix: remove <img_0>"),
    ("make it red " * 400, r"context is 2048 tokens.*Fix: shorten the instruction by at least \d+ tokens"),
    ("make it \ud800red", r"character 8 \(counting from 0\) is U\+D800"),
])
def test_the_encode_node_reports_the_instructions_problem(lmm, instruction, problem):
    from lmm_edit.loaders.instruction import InstructionError

    with pytest.raises(InstructionError, match=problem):
        _encode(lmm, torch.full((1, 8, 8, 3), 0.5), instruction)


def test_a_one_pixel_gray_image_is_encoded(lmm):
    instruction, _ = _encode(lmm, torch.full((1, 1, 1, 1), 0.5), "make it red")
    assert instruction.hidden_states.shape[0] == 32 and instruction.hidden_states.isfinite().all()
    assert instruction.vision_features.shape[0] == 256  # 224 px CLIP: 16 x 16 patches
