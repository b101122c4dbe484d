"""The encoded instruction: what an LMM encoder hands to a bridge (BIM, IAA).

One data type for every model family, so that the BIM conditioning and the IAA
image branch do not care whether LLaVA-1.1 (SmartEdit) or another VLM produced it.
It holds small CPU tensors so ComfyUI's cache can keep it between runs.
"""

from __future__ import annotations

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
