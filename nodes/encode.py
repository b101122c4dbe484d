"""LMMEdit_LMMEncode: image + instruction through the LMM -> LMM_EDIT_INSTRUCTION (and the LMM's text).

The node calls the one method of the encoder protocol (loaders/encoder.py) on whatever LMM it gets
(SmartEdit's LLaVA-1.1, a transformers VLM), with a ProgressBar tick and an interrupt check after every
generated token. The result holds small CPU tensors, so ComfyUI's cache lets a user re-sample with
another noise seed without running the LMM again.
"""

from __future__ import annotations

import comfy.model_management
import comfy.utils
from comfy_api.v0_0_2 import io

from ..loaders.encoder import AUTO_TEMPLATE, EncodeOptions
from ..loaders.pixels import first_rgb
from ..loaders.smartedit.encoder import TEMPLATE_CHOICES
from .socket_types import INSTRUCTION, LMM
from .token_status import encode_ui

REFERENCE_TEMPERATURE = 0.7  # SmartEdit test/DS_SmartEdit_test.py --temperature default
EXPECTED_ANSWER_TOKENS = 48  # a short sentence and 32 image tokens: the progress bar's first estimate

__all__ = ["AUTO_TEMPLATE", "LMMEncodeNode", "TEMPLATE_CHOICES"]


class TokenProgress:
    """on_token callback: stops at an interrupt (between two tokens), then ticks the progress bar."""

    def __init__(self, node_id: str | None) -> None:
        self.total = EXPECTED_ANSWER_TOKENS
        self.bar = comfy.utils.ProgressBar(self.total, node_id=node_id)
        self.steps = 0

    def __call__(self, step: int, token_id: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        self.steps = step + 1
        self.total = max(self.total, self.steps + 1)
        self.bar.update_absolute(self.steps, self.total)

    def finish(self) -> None:
        self.bar.update_absolute(self.total, self.total)


class LMMEncodeNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LMMEdit_LMMEncode",
            display_name="LMM Encode (instruction)",
            category="lmm_edit/conditioning",
            description="Runs the multimodal LLM on the source image and the instruction, as SmartEdit's reference "
            "does, and keeps the hidden states of its image tokens for the bridge. Seeded.",
            inputs=[
                LMM.Input("lmm", tooltip="The LMM from LMMEdit_SmartEditLoader, or a vision-language model from "
                          "LMMEdit_MLLMLoader (which uses its family's own template and [MM] tokens)."),
                io.Image.Input("image", tooltip="Source image; the first of a batch is used. SmartEdit's LMM sees it "
                               "squashed to 224 x 224, as in the reference."),
                io.String.Input("instruction", multiline=True, default="",
                                tooltip="The edit instruction, e.g. 'Replace the red apple with a green pear.'"),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seeds the token sampling and, on auto, the conversation template. The reference "
                             "is unseeded."),
                io.Float.Input("temperature", default=REFERENCE_TEMPERATURE, min=0.0, max=2.0, step=0.05, round=0.01,
                               tooltip="Sampling temperature of the LMM's answer (0.7 in the reference); 0 = greedy."),
                io.Combo.Input("template", options=TEMPLATE_CHOICES, default=AUTO_TEMPLATE,
                               tooltip="SmartEdit's conversation template: one of the reference's 30 (it picks one at "
                               "random per image); auto picks one from the seed. A vision-language model from "
                               "LMMEdit_MLLMLoader uses its family's own template and needs auto."),
                io.Boolean.Input("force_image_tokens", default=False,
                                 tooltip="When the LMM does not write its image tokens (<img_0>..<img_31>, or [MM_k]) "
                                 "in order, append them as in training instead of using what it wrote (the "
                                 "reference has no fallback and stops with an assertion). Off = the reference's "
                                 "behaviour."),
            ],
            outputs=[
                INSTRUCTION.Output(display_name="INSTRUCTION",
                                   tooltip="The encoded instruction (image-token hidden states and CLIP patch "
                                   "features) for LMMEdit_BIMConditioning."),
                io.String.Output(display_name="text", tooltip="The LMM's text answer (image tokens removed)."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, lmm, image, instruction, seed, temperature, template, force_image_tokens) -> io.NodeOutput:
        image = first_rgb(image, "LMMEdit_LMMEncode")  # gray / RGBA -> RGB; empty or NaN refused
        progress = TokenProgress(cls.hidden.unique_id if cls.hidden is not None else None)  # None: called directly
        options = EncodeOptions(seed, temperature, template, force_image_tokens, on_token=progress)
        result = lmm.encode(image[0], instruction, options)
        progress.finish()
        return io.NodeOutput(result, result.text, ui=encode_ui(result, result.status))


NODES = [LMMEncodeNode]
