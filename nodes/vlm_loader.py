"""LMMEdit_MLLMLoader: a transformers vision-language model folder -> LMM_EDIT_LMM for LMMEdit_LMMEncode.

The work is in ``loaders/vlm/load.py`` (family from ``config.json``, learned ``[MM]`` tokens).
Here: the folder picker (``models/lmm_edit/mllm/<name>/``), the dtype policy shared with the SmartEdit
loader, and the model as a ComfyUI ModelPatcher, so ComfyUI moves it to the text-encoder device for
encoding and offloads it for the UNet.
"""

from __future__ import annotations

from collections.abc import Callable

import comfy.model_patcher
import torch
from comfy_api.latest import io

from ..loaders import model_folders
from ..loaders.instruction import LMMInstruction
from ..loaders.vlm import (
    DEFAULT_NUM_MM_TOKENS,
    FAMILIES_BY_MODEL_TYPE,
    MLLMBundle,
    encode_instruction,
    load_mllm,
)
from .folders import list_model_subfolders, resolve_model_subfolder
from .module_patchers import DTYPE_CHOICES, lmm_load_device, load_for_use, resolve_dtype, wrap_module
from .socket_types import LMM

MAX_MM_TOKENS = 256
MAX_NEW_TOKENS = 512  # the answer's length limit, as SmartEdit's reference decode (loaders/smartedit/decode.py)


class MLLMModule(torch.nn.Module):
    """One module for ComfyUI to move: ``vlm`` is the transformers model; ``mllm_bundle`` adds tokenizer,
    image processor, family and ``[MM]`` token ids (the same model object, so it moves along)."""

    def __init__(self, bundle: MLLMBundle) -> None:
        super().__init__()
        self.vlm = bundle.model
        self.mllm_bundle = bundle


def mllm_bundle_of(lmm: comfy.model_patcher.ModelPatcher) -> MLLMBundle | None:
    """The VLM bundle behind an LMM_EDIT_LMM from LMMEdit_MLLMLoader; None for another LMM (e.g. SmartEdit's)."""
    return getattr(lmm.model, "mllm_bundle", None)


def encode_with_mllm(
    lmm: comfy.model_patcher.ModelPatcher,
    image: torch.Tensor,
    instruction: str,
    *,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    force_mm_tokens: bool,
    template: str | None = None,
    on_token: Callable[[int], None] | None = None,
) -> LMMInstruction:
    """Load the VLM through ComfyUI, then encode one image ``[H, W, 3]`` and the instruction (loaders' encoder)."""
    bundle = mllm_bundle_of(lmm)
    if bundle is None:
        raise TypeError("encode_with_mllm needs an LMM_EDIT_LMM made by LMMEdit_MLLMLoader")
    load_for_use(lmm)
    return encode_instruction(
        bundle, image, instruction, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
        force_mm_tokens=force_mm_tokens, template=template, on_token=on_token,
    )


def encode_for_node(
    lmm: comfy.model_patcher.ModelPatcher,
    image: torch.Tensor,
    instruction: str,
    seed: int,
    temperature: float,
    force_mm_tokens: bool,
    on_step: Callable[[int, int], None],
) -> tuple[LMMInstruction, list[str]]:
    """What LMMEdit_LMMEncode does with a VLM: answer (seeded), then the ``[MM]`` states; plus its status lines.

    The conversation template is the family's own (``mllm_families.py``). ``on_step(step, token_id)``
    is called per generated token (the node's progress bar and interrupt check).
    """
    steps = iter(range(MAX_NEW_TOKENS + 1))
    result = encode_with_mllm(
        lmm, image, instruction, max_new_tokens=MAX_NEW_TOKENS, temperature=temperature, seed=seed,
        force_mm_tokens=force_mm_tokens, on_token=lambda token: on_step(next(steps), token),
    )
    count = result.hidden_states.shape[0]
    if result.image_tokens_in_order:
        first = f"OK: the model wrote the {count} [MM] tokens in order."
    elif result.forced:
        first = (f"[MM] tokens forced: the model did not write [MM_0]..[MM_{count - 1}] in order by itself; "
                 "force_image_tokens appended them (the answer layout of training).")
    else:
        first = f"WARNING: the model wrote its {count} [MM] tokens out of order; they are used as written."
    lines = [first, f"Template ({result.family}): {result.template}", f"Answer: {result.text}"]
    if not result.extras.get("mm_tokens_trained", True):
        lines.append("Note: this folder has no learned [MM] tokens (the loader added them untrained); bridges "
                     "trained for a fine-tuned model will not get meaningful states.")
    return result, lines


_FAMILY_NAMES = ", ".join(family.name for family in FAMILIES_BY_MODEL_TYPE.values())


class MLLMLoaderNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LMMEdit_MLLMLoader",
            display_name="Multimodal LLM Loader (InsightEdit)",
            category="lmm_edit/loaders",
            description="Loads a transformers vision-language model with InsightEdit's learned [MM] tokens, for "
            f"LMMEdit_LMMEncode. Families: {_FAMILY_NAMES} (read from config.json).",
            inputs=[
                io.Combo.Input(
                    "model_folder", options=list_model_subfolders(model_folders.MLLM),
                    tooltip="A folder in models/lmm_edit/mllm/ as save_pretrained writes it (config.json, "
                    "*.safetensors, tokenizer and preprocessor files), e.g. a download of llava-hf/llava-1.5-7b-hf "
                    "or Qwen/Qwen2-VL-7B-Instruct, or an InsightEdit fine-tune holding the [MM] tokens.",
                ),
                io.Int.Input(
                    "num_mm_tokens", default=DEFAULT_NUM_MM_TOKENS, min=1, max=MAX_MM_TOKENS,
                    tooltip="r, the number of learned [MM] tokens whose hidden states feed the bridge (32 as in "
                    "SmartEdit). A fine-tuned folder must hold [MM_0]..[MM_{r-1}]; otherwise they are added, untrained.",
                ),
                io.Combo.Input(
                    "dtype", options=list(DTYPE_CHOICES), default="auto",
                    tooltip="auto: fp16 (else bf16) on a GPU, fp32 on CPU. A 7B model needs about 15 GB in fp16.",
                ),
            ],
            outputs=[LMM.Output(display_name="LMM", tooltip="The multimodal LLM, for LMMEdit_LMMEncode.")],
        )

    @classmethod
    def execute(cls, model_folder, num_mm_tokens, dtype) -> io.NodeOutput:
        folder = resolve_model_subfolder(model_folders.MLLM, model_folder)
        device = lmm_load_device()
        bundle = load_mllm(folder, num_mm_tokens, dtype=resolve_dtype(dtype, device), device="cpu")
        return io.NodeOutput(wrap_module(MLLMModule(bundle), device))


NODES = [MLLMLoaderNode]
