"""LMMEdit_LMMEncode: image + instruction through the LMM -> LMM_EDIT_INSTRUCTION (and the LMM's text).

SmartEdit's decode loop (loaders/smartedit/decode.py), seeded; a ProgressBar tick and an interrupt
check after every generated token. The result holds small CPU tensors, so ComfyUI's cache lets a
user re-sample with another noise seed without running the LMM again.
"""

from __future__ import annotations

import comfy.model_management
import comfy.utils
from comfy_api.latest import io

from ..loaders.instruction import LMMInstruction
from ..loaders.smartedit import TEMPLATES, SmartEditLMM, encode_instruction, template_index_for_seed
from ..loaders.smartedit.decode import MAX_NEW_TOKENS
from .mllm_loader import encode_for_node, mllm_bundle_of
from .module_patchers import load_for_use
from .socket_types import INSTRUCTION, LMM
from .token_status import encode_ui

AUTO_TEMPLATE = "auto (from seed)"
# "NN: <Human line>", numbered 1..30 in the order of data/ConversationTemplateEditing_use.txt
TEMPLATE_CHOICES = [AUTO_TEMPLATE] + [f"{i + 1:02d}: {human}" for i, (human, _) in enumerate(TEMPLATES)]
REFERENCE_TEMPERATURE = 0.7  # test/DS_SmartEdit_test.py --temperature default
EXPECTED_ANSWER_TOKENS = 48  # a short sentence and 32 image tokens: the progress bar's first estimate


def template_index(choice: str, seed: int) -> int:
    """0-based index into TEMPLATES of a combo choice; auto: the one the seed picks."""
    if choice == AUTO_TEMPLATE:
        return template_index_for_seed(seed)
    if choice not in TEMPLATE_CHOICES:
        raise ValueError(f"unknown template {choice!r}")
    return TEMPLATE_CHOICES.index(choice) - 1


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


def status_lines(result: LMMInstruction, template_number: int, expected_states: int) -> list[str]:
    """What the node shows: whether the image tokens came out as trained, the template, the answer."""
    kept = result.hidden_states.shape[0]
    if result.forced:
        first = (
            f"Image tokens forced: the LMM did not write <img_0>..<img_{expected_states - 1}> in order by itself; "
            f"force_image_tokens appended them (the answer layout of training)."
        )
    elif result.image_tokens_in_order:
        first = f"OK: the LMM wrote the {expected_states} image tokens in order."
    else:
        problem = result.extras.get("problem") or (
            f"the LMM's image tokens came out of order ({kept} kept); the reference would use them as they are and "
            "the edit may be poor. Turn on force_image_tokens, or try another seed, template or temperature 0"
        )
        first = f"WARNING: {problem}."
    return [first, f"Template {template_number:02d}: {TEMPLATES[template_number - 1][0]}", f"LMM answer: {result.text}"]


class LMMEncodeNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LMMEdit_LMMEncode",
            display_name="LMM Encode (instruction)",
            category="lmm_edit/conditioning",
            description="Runs the multimodal LLM on the source image and the instruction, as SmartEdit's reference "
            "does, and keeps the hidden states of its 32 image tokens for the bridge. Seeded.",
            inputs=[
                LMM.Input("lmm", tooltip="The LMM from LMMEdit_SmartEditLoader, or a vision-language model from "
                          "LMMEdit_MLLMLoader (which uses its family's own template and [MM] tokens)."),
                io.Image.Input("image", tooltip="Source image; the first of a batch is used. The LMM sees it "
                               "squashed to 224 x 224, as in the reference."),
                io.String.Input("instruction", multiline=True, default="",
                                tooltip="The edit instruction, e.g. 'Replace the red apple with a green pear.'"),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seeds the token sampling and, on auto, the conversation template. The reference "
                             "is unseeded."),
                io.Float.Input("temperature", default=REFERENCE_TEMPERATURE, min=0.0, max=2.0, step=0.05, round=0.01,
                               tooltip="Sampling temperature of the LMM's answer (0.7 in the reference); 0 = greedy."),
                io.Combo.Input("template", options=TEMPLATE_CHOICES, default=AUTO_TEMPLATE,
                               tooltip="Conversation template: one of the reference's 30 (it picks one at random per "
                               "image); auto picks one from the seed."),
                io.Boolean.Input("force_image_tokens", default=False,
                                 tooltip="When the LMM does not write <img_0>..<img_31> in order, append them as in "
                                 "training instead of using what it wrote (the reference has no fallback and stops "
                                 "with an assertion). Off = the reference's behaviour."),
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
        module = lmm.model
        if mllm_bundle_of(lmm) is not None:  # a VLM from LMMEdit_MLLMLoader: its family's own template
            progress = TokenProgress(cls.hidden.unique_id if cls.hidden is not None else None)
            result, lines = encode_for_node(lmm, image[0], instruction, seed, temperature, force_image_tokens, progress)
            progress.finish()
            return io.NodeOutput(result, result.text, ui=encode_ui(result, lines))
        if not isinstance(module, SmartEditLMM):
            raise TypeError(f"LMMEdit_LMMEncode reads SmartEdit's LMM (from LMMEdit_SmartEditLoader); got a "
                            f"{type(module).__name__}")
        index = template_index(template, seed)
        load_for_use(lmm, _working_bytes(module))
        progress = TokenProgress(cls.hidden.unique_id if cls.hidden is not None else None)  # None: called directly
        result = encode_instruction(
            module, image[0], instruction, seed=seed, temperature=temperature, template=index,
            force_image_tokens=force_image_tokens, on_token=progress,
        )
        progress.finish()
        lines = status_lines(result, index + 1, len(module.info.image_token_ids))
        return io.NodeOutput(result, result.text, ui=encode_ui(result, lines))


def _working_bytes(module: SmartEditLMM) -> int:
    """Room for the KV cache of a full-length answer and the prompt's activations (prompt ~ 600 positions)."""
    config = module.llm.config
    itemsize = module.llm.embed_tokens.weight.element_size()
    positions = 1024 + MAX_NEW_TOKENS
    kv_cache = 2 * config.layers * config.hidden * positions * itemsize
    activations = 4 * positions * config.intermediate * itemsize  # MLP intermediates of the prompt pass
    return kv_cache + activations + 256 * 1024 * 1024


NODES = [LMMEncodeNode]
