"""SmartEdit's LMM as one module: LLaVA-1.1's LLaMA with SmartEdit's LoRA merged, CLIP tower, mm_projector."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..llama import LlamaLM
from .tokenizer import LlamaSlowTokenizer
from .vision import ClipVisionTower

LLAMA1_CONTEXT = 2048  # LLaVA-7B-v1 and vicuna-7b-v1-1 config.json: max_position_embeddings


@dataclass
class LMMInfo:
    """Facts about the loaded LMM that the encoder needs."""

    base_vocab: int
    image_token_ids: list[int]
    eos_id: int
    select_layer: int
    family: str = "llava-1.1"
    context: int = LLAMA1_CONTEXT  # positions the LLM was trained on (LLaVA config.json max_position_embeddings)
    sources: dict[str, str] = field(default_factory=dict)


class SmartEditLMM(nn.Module):
    """The LMM handle: `llm` (LlamaLM), `vision` (ClipVisionTower), `mm_projector`, plus tokenizer and info."""

    def __init__(self, llm: LlamaLM, vision: ClipVisionTower, mm_projector: nn.Module, tokenizer: LlamaSlowTokenizer,
                 info: LMMInfo) -> None:
        super().__init__()
        self.llm = llm
        self.vision = vision
        self.mm_projector = mm_projector
        self.tokenizer = tokenizer
        self.info = info

    def execution_device(self) -> torch.device:
        """Where an encode runs: where ComfyUI's ModelPatcher loaded the module (it sets ``device``; under partial
        loading some weights stay offloaded and are cast per layer), else where the weights are."""
        placed = self.__dict__.get("device")
        return placed if isinstance(placed, torch.device) else self.llm.norm.weight.device
