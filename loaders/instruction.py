"""The encoded instruction: what an LMM encoder hands to a bridge (BIM, IAA).

One data type for every model family, so that the BIM conditioning and the IAA
image branch do not care whether LLaVA-1.1 (SmartEdit) or another VLM produced it.
It holds small CPU tensors so ComfyUI's cache can keep it between runs.

The checks every encoder applies to the instruction text live here too (one place): text with no UTF-8
form, the model's own placeholder tokens inside it, and a prompt longer than the model's context.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class LMMInstruction:
    """Output of an LMM encoder for one image and one instruction.

    hidden_states: [N, D_llm] last-layer hidden states of the N image-token steps
        (SmartEdit: N = 32 states of the fed <img_k> tokens).
    vision_features: [P, D_vis] vision-tower patch features of the source image
        (SmartEdit: CLIP ViT-L/14 penultimate layer without CLS, P = 256).
    token_ids: [T] the token ids the LMM emitted (generated part only).
    image_tokens_in_order: True when the image tokens came out exactly as
        <img_0> .. <img_{N-1}> in order (False also when they were forced).
    forced: True when the image tokens were appended by forced mode.
    family: model family, e.g. "llava-1.1", "llava-1.5", "qwen2-vl".
    text: the LMM's text answer (special tokens removed).
    template: the conversation template used.
    status: what the encode node shows (``encoder.status_lines``): token check, template, answer.
    """

    hidden_states: torch.Tensor
    vision_features: torch.Tensor
    token_ids: torch.Tensor
    image_tokens_in_order: bool
    family: str
    text: str = ""
    forced: bool = False
    template: str = ""
    extras: dict = field(default_factory=dict)
    status: tuple[str, ...] = ()


class InstructionError(ValueError):
    """An instruction the model cannot take as it is: the message says which part and what to change."""


def check_encodable(instruction: str) -> None:
    """Refuse text that has no UTF-8 form (a lone surrogate such as "\\ud800", from a broken copy or a JSON escape)."""
    try:
        instruction.encode("utf-8")
    except UnicodeEncodeError as err:
        char = instruction[err.start]
        raise InstructionError(
            f"the instruction cannot be encoded: character {err.start} (counting from 0) is U+{ord(char):04X}, half "
            f"of a surrogate pair with no other half ({instruction[max(0, err.start - 20):err.start]!r} comes "
            "before it). Fix: retype that part of the instruction or paste it again from its source."
        ) from None


def check_placeholders(instruction: str, reserved: Iterable[str], family: str) -> None:
    """Refuse an instruction holding one of the model's own tokens (image placeholders, turn markers, ...):
    the tokenizer would read it as that token, not as text."""
    found = sorted({token for token in reserved if token and token in instruction}, key=instruction.index)
    if found:
        where = ", ".join(f"{token!r} at character {instruction.index(token)}" for token in found)
        raise InstructionError(
            f"the instruction contains {where}: {'this is' if len(found) == 1 else 'these are'} the {family} "
            "model's own placeholder tokens, which it reads as image slots or conversation markers, not as text. "
            f"Fix: remove {', '.join(found)} from the instruction (or reword it)."
        )


def check_context(needed: int, context: int, instruction_tokens: int, parts: str, family: str) -> None:
    """Refuse a prompt that does not fit the model's context (``max_position_embeddings``), with both lengths.

    needed: the whole sequence in tokens (template, image tokens, instruction and the tokens the encoder must
    read after it); parts: how they add up, for the message.
    """
    if needed > context:
        raise InstructionError(
            f"the instruction is too long for the {family} model: the prompt needs {needed} tokens ({parts}) and the "
            f"model's context is {context} tokens; the instruction alone is {instruction_tokens} tokens. Fix: "
            f"shorten the instruction by at least {needed - context} tokens."
        )
