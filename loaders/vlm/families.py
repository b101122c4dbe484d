"""The vision-language model families the MLLM encoder recognises, by ``config.json`` ``model_type``.

Each family names its transformers class, its default conversation template (from the model cards
cited below) and how its un-projected vision features are read. ``{image}`` in a template stands for
the family's image marker (one placeholder token, expanded to one token per visual feature),
``{instruction}`` for the user's instruction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelFileError
from ..weight_files import read_json

VISION_LLAVA = "llava"  # CLIP/SigLIP tower; features = hidden_states[vision_feature_layer] of the base image
VISION_QWEN2 = "qwen2-vl"  # Qwen2-VL ViT; features = blocks' output before the 2x2 patch merger


@dataclass(frozen=True)
class VLMFamily:
    """A recognised family: ``name`` (LMMInstruction.family), transformers ``model_class``, template, vision kind."""

    name: str
    model_type: str
    model_class: str
    default_template: str
    vision_kind: str


FAMILIES_BY_MODEL_TYPE = {
    family.model_type: family
    for family in (
        VLMFamily(  # llava-hf/llava-1.5-7b-hf model card prompt
            "llava-1.5", "llava", "LlavaForConditionalGeneration",
            "USER: {image}\n{instruction} ASSISTANT:", VISION_LLAVA,
        ),
        VLMFamily(  # llava-hf/llava-v1.6-mistral-7b-hf model card prompt
            "llava-next", "llava_next", "LlavaNextForConditionalGeneration",
            "[INST] {image}\n{instruction} [/INST]", VISION_LLAVA,
        ),
        VLMFamily(  # llava-hf/llava-onevision-qwen2-7b-ov-hf chat template (Qwen2 ChatML)
            "llava-onevision", "llava_onevision", "LlavaOnevisionForConditionalGeneration",
            "<|im_start|>user {image}\n{instruction}<|im_end|><|im_start|>assistant\n", VISION_LLAVA,
        ),
        VLMFamily(  # Qwen/Qwen2-VL-7B-Instruct chat template, one image
            "qwen2-vl", "qwen2_vl", "Qwen2VLForConditionalGeneration",
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{image}{instruction}"
            "<|im_end|>\n<|im_start|>assistant\n", VISION_QWEN2,
        ),
        VLMFamily(  # Qwen/Qwen2.5-VL-7B-Instruct chat template, one image
            "qwen2.5-vl", "qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration",
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{image}{instruction}"
            "<|im_end|>\n<|im_start|>assistant\n", VISION_QWEN2,
        ),
    )
}


def recognise_vlm_family(folder: str | Path) -> VLMFamily:
    """The family of the model in ``folder`` from its ``config.json`` ``model_type``; ``ModelFileError`` otherwise."""
    config_path = Path(folder) / "config.json"
    supported = ", ".join(f"{f.name} ({t})" for t, f in FAMILIES_BY_MODEL_TYPE.items())
    if not config_path.is_file():
        raise ModelFileError(
            folder,
            "a transformers model folder with config.json",
            "no config.json",
            "point the loader at the folder save_pretrained wrote (config.json, *.safetensors, tokenizer files)",
        )
    model_type = read_json(config_path, fix="download config.json again").get("model_type")
    if model_type not in FAMILIES_BY_MODEL_TYPE:
        raise ModelFileError(
            config_path,
            f"a vision-language model of a recognised family: {supported}",
            f"model_type {model_type!r}",
            "use one of these families; SmartEdit's LLaVA-1.1 goes through the SmartEdit loader",
        )
    return FAMILIES_BY_MODEL_TYPE[model_type]
