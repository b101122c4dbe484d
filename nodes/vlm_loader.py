"""LMMEdit_MLLMLoader: a transformers vision-language model folder -> LMM_EDIT_LMM for LMMEdit_LMMEncode.

The work is in ``loaders/vlm`` (family from ``config.json``, learned ``[MM]`` tokens, the encoder). Here:
the folder picker (``models/lmm_edit/mllm/<name>/``), the dtype policy shared with the SmartEdit loader, and
the model as a ComfyUI ModelPatcher, so ComfyUI moves it to the text-encoder device for encoding and
offloads it for the UNet. transformers builds its own layers; their stock torch.nn classes are swapped for
ComfyUI's (``adopt_comfy_layers``) so ComfyUI can load the model partially, and ``weight_dtype`` stores the
language decoder's Linear weights narrower (the layers transformers never reads the dtype of).
"""

from __future__ import annotations

from comfy_api.v0_0_2 import io

from ..loaders import model_folders
from ..loaders.storage import STORAGE_CHOICES, decoder_layer, storage_dtype, store_weights
from ..loaders.vlm import DEFAULT_NUM_MM_TOKENS, FAMILIES_BY_MODEL_TYPE, VLMEncoder, VLMModule, load_mllm
from .folders import list_model_subfolders, resolve_model_subfolder
from .lmm_handle import LMMHandle
from .module_patchers import (
    DTYPE_CHOICES,
    WEIGHT_DTYPE_TOOLTIP,
    adopt_comfy_layers,
    lmm_load_device,
    lmm_operations,
    resolve_dtype,
    wrap_module,
)
from .socket_types import LMM

MAX_MM_TOKENS = 256
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
                io.Combo.Input(
                    "weight_dtype", options=list(STORAGE_CHOICES), default="default", optional=True,
                    tooltip=WEIGHT_DTYPE_TOOLTIP + " Here it applies to the language decoder's layers (80-90 % of a "
                    "7B model's weights); embeddings, lm_head and the vision tower keep the dtype above.",
                ),
            ],
            outputs=[LMM.Output(display_name="LMM", tooltip="The multimodal LLM, for LMMEdit_LMMEncode.")],
        )

    @classmethod
    def execute(cls, model_folder, num_mm_tokens, dtype, weight_dtype="default") -> io.NodeOutput:
        folder = resolve_model_subfolder(model_folders.MLLM, model_folder)
        device = lmm_load_device()
        compute = resolve_dtype(dtype, device)
        bundle = load_mllm(folder, num_mm_tokens, dtype=compute, device="cpu")
        storage = storage_dtype(weight_dtype, compute)
        ops = lmm_operations(storage, compute)
        adopt_comfy_layers(bundle.model, ops)
        store_weights(bundle.model, storage, compute, ops, only=decoder_layer)
        return io.NodeOutput(LMMHandle(wrap_module(VLMModule(bundle), device), VLMEncoder(bundle)))


NODES = [MLLMLoaderNode]
