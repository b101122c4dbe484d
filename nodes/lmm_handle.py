"""LMM_EDIT_LMM: what the loader nodes output and LMMEdit_LMMEncode calls, whatever the model family.

``patcher`` is the ComfyUI ModelPatcher around the family's torch module (ComfyUI moves it to the
text-encoder device before each encode and offloads it for the UNet); ``encoder`` is the family's
``InstructionEncoder`` (loaders/encoder.py) over the same module, so it sees the module where ComfyUI put it.
"""

from __future__ import annotations

from dataclasses import dataclass

import comfy.model_patcher
import torch

from ..loaders.encoder import EncodeOptions, InstructionEncoder
from ..loaders.instruction import LMMInstruction
from .module_patchers import load_for_use


@dataclass(frozen=True)
class LMMHandle:
    patcher: comfy.model_patcher.ModelPatcher
    encoder: InstructionEncoder

    def __post_init__(self) -> None:
        if not isinstance(self.encoder, InstructionEncoder):
            raise TypeError(f"{type(self.encoder).__name__} does not implement loaders.encoder.InstructionEncoder")

    @property
    def family(self) -> str:
        return self.encoder.family

    def encode(self, image: torch.Tensor, instruction: str, options: EncodeOptions) -> LMMInstruction:
        """Load the module through ComfyUI (with room for the encode's working memory), then encode."""
        load_for_use(self.patcher, self.encoder.memory_required())
        return self.encoder.encode(image, instruction, options)
