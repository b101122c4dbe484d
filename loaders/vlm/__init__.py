"""Transformers vision-language models as InsightEdit-style instruction encoders.

LLaVA-1.5/NeXT/OneVision and Qwen2-VL/2.5-VL with learned ``[MM]`` tokens -> ``LMMInstruction``
(``[MM]`` hidden states, vision features, answer text).

- ``families.py``: the recognised families, by ``config.json`` ``model_type``;
- ``weights.py``: the model, tokenizer and image processor read with transformers, every problem named;
- ``load.py``: ``load_mllm`` (model, tokenizer, image processor, ``[MM]`` tokens) -> ``MLLMBundle``;
- ``encoder.py``: ``encode_instruction`` and ``VLMEncoder``, the family's ``InstructionEncoder``.
"""

from .encoder import VLMEncoder, encode_instruction, split_answer
from .families import FAMILIES_BY_MODEL_TYPE, VLMFamily, recognise_vlm_family
from .load import DEFAULT_NUM_MM_TOKENS, MM_TOKEN_FORMAT, MLLMBundle, VLMModule, load_mllm

__all__ = [
    "DEFAULT_NUM_MM_TOKENS",
    "FAMILIES_BY_MODEL_TYPE",
    "MM_TOKEN_FORMAT",
    "MLLMBundle",
    "VLMEncoder",
    "VLMFamily",
    "VLMModule",
    "encode_instruction",
    "load_mllm",
    "recognise_vlm_family",
    "split_answer",
]
