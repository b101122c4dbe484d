"""The instruction-encoder protocol: what every LMM family implements for ``LMMEdit_LMMEncode``.

As core's ``CLIPTextEncode`` calls one method of whatever CLIP it gets, the encode node calls
``encode(image, instruction, options)`` of whatever encoder the loader node made: SmartEdit's LLaVA-1.1
(``smartedit.encoder.SmartEditEncoder``), a transformers VLM (``vlm.encoder.VLMEncoder``), later
InstructAny2Pix's LLM. Every family reads the same options, reports bad token output the same way (a
status line, never an exception: the states it kept are used, as SmartEdit's reference uses them) and
returns an ``LMMInstruction`` whose ``status`` the node shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from .instruction import LMMInstruction

MAX_NEW_TOKENS = 512  # the answer's length limit: SmartEdit's reference decode (test/DS_SmartEdit_test.py)
AUTO_TEMPLATE = "auto (from seed)"  # the family's own choice of conversation template


@dataclass(frozen=True)
class EncodeOptions:
    """seed: token sampling (and, on auto, the template); temperature 0 = greedy; template: AUTO_TEMPLATE or a
    family's template choice; force_image_tokens: append the trained image-token run when the model does not
    write it; on_token(step, token_id): called after every generated token (progress, interrupts)."""

    seed: int = 0
    temperature: float = 0.0
    template: str = AUTO_TEMPLATE
    force_image_tokens: bool = False
    on_token: Callable[[int, int], None] | None = None


@runtime_checkable
class InstructionEncoder(Protocol):
    """An LMM that turns a source image and an instruction into an ``LMMInstruction``."""

    family: str

    def encode(self, image: torch.Tensor, instruction: str, options: EncodeOptions) -> LMMInstruction:
        """image: one ComfyUI IMAGE row ``[H, W, 3]`` in 0..1. The result carries ``status`` lines."""
        ...

    def memory_required(self) -> int:
        """Bytes of working memory one ``encode`` needs beyond the weights (for ComfyUI's model management)."""
        ...


def status_lines(result: LMMInstruction, expected: int, token_range: str, template_line: str) -> tuple[str, ...]:
    """What the encode node shows: whether the image tokens came out as trained, the template, the answer.

    expected: the number of image tokens the family trains (r); token_range: how they read, e.g.
    "<img_0>..<img_31>" or "[MM_0]..[MM_31]".
    """
    kept = result.hidden_states.shape[0]
    if result.forced:
        first = (f"Image tokens forced: the model did not write {token_range} in order by itself; "
                 "force_image_tokens appended them (the answer layout of training).")
    elif result.image_tokens_in_order:
        first = f"OK: the model wrote the {expected} image tokens in order."
    else:
        problem = result.extras.get("problem") or (
            f"the model's image tokens came out of order ({kept} kept); they are used as written and the edit may "
            "be poor. Turn on force_image_tokens, or try another seed, template or temperature 0"
        )
        first = f"WARNING: {problem}."
    notes = tuple(result.extras.get("notes", ()))
    return (first, template_line, f"Answer: {result.text}", *notes)


def missing_tokens_problem(kept: int, expected: int, token_range: str) -> str:
    """The status text when a model wrote ``kept`` image tokens where ``expected`` were trained."""
    return (f"the model wrote {kept} image tokens instead of the {expected} {token_range}; SmartEdit's reference "
            "would stop with an assertion error. Turn on force_image_tokens, or try another seed, template or "
            "temperature 0")
