"""Instruction markers `[image1..3]` / `[audio1..3]` -> the reference's `inst` and `mm_data` order.

Reference: jacklishufan/InstructAny2Pix @ d11e49b, `serve.py` `run`: every `[...]` group of the instruction
must be one of the six markers, each used once and with its input provided; each is replaced by `<video>` and
its input appended to `mm_data` in order of appearance. The demo silently ignores an input that no marker
names; here that is an error too, so an input is never dropped unnoticed.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from ..instruction import check_encodable, check_placeholders
from .tokenizer import VIDEO, reserved_tokens

MARKER_PATTERN = re.compile(r"\[[^\]]+\]")  # serve.py run
SLOTS = 3  # serve.py: image_input1..3, audio_input1..3
VALID_MARKERS = tuple(f"[{kind}{i}]" for kind in ("image", "audio") for i in range(1, SLOTS + 1))


class MarkerError(ValueError):
    """An instruction whose markers do not match the connected inputs."""


@dataclass(frozen=True)
class MarkedInstruction:
    text: str  # the instruction with every marker replaced by <video>
    inputs: tuple[tuple[str, int], ...]  # (kind "image"/"audio", slot 1..3) in order of appearance


def parse_markers(instruction: str, connected: Collection[tuple[str, int]]) -> MarkedInstruction:
    """Replace the markers by `<video>`; `connected` lists the (kind, slot) inputs that are provided.

    Text with no UTF-8 form and the LLM's own tokens typed into the instruction (`<video>`, `<im_gen>` ...) are
    refused first (``instruction.InstructionError``): the inputs are named by markers only."""
    check_encodable(instruction)
    check_placeholders(instruction, reserved_tokens(), "InstructAny2Pix")
    found = MARKER_PATTERN.findall(instruction)
    if len(set(found)) != len(found):
        dup = sorted({m for m in found if found.count(m) > 1})
        raise MarkerError(f"the instruction names {', '.join(dup)} more than once; name each input once")
    inputs: list[tuple[str, int]] = []
    text = instruction
    for marker in found:
        if marker not in VALID_MARKERS:
            raise MarkerError(
                f"{marker} is not an input marker; use {', '.join(VALID_MARKERS)} (brackets are reserved for markers)"
            )
        kind, slot = marker[1:-2], int(marker[-2])
        if (kind, slot) not in connected:
            raise MarkerError(f"the instruction names {marker} but no {kind} is connected to {kind}{slot}")
        inputs.append((kind, slot))
        text = text.replace(marker, VIDEO)
    unused = sorted(set(connected) - set(inputs))
    if unused:
        names = ", ".join(f"{k}{s}" for k, s in unused)
        raise MarkerError(f"{names} is connected but the instruction does not name it; add [{unused[0][0]}{unused[0][1]}]")
    if not inputs:
        raise MarkerError("the instruction names no input; write e.g. 'add [audio1] to [image1]'")
    return MarkedInstruction(text, tuple(inputs))
