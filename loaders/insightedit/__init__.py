"""InsightEdit's image stream and the pieces it shares with IP-Adapter, in pure torch.

- ``load_image_adapter``: IP-Adapter (base 4-token, Plus 16-token) and InsightEdit IAA files, recognised by keys.
- ``decoupled_attention``: what an attn2 replace patch calls (text attention + lambda-weighted image branches).
- ``cross_attention_layers``: a UNet's attn2 layers (ComfyUI block keys) in the adapters' weight order.
- ``mask_to_query_weights``: an image mask as per-query-row weights of one attn2 layer.
- ``load_mllm`` / ``encode_instruction``: LLaVA-1.5/NeXT/OneVision and Qwen2-VL/2.5-VL with learned ``[MM]``
  tokens -> ``LMMInstruction`` (``[MM]`` hidden states, vision features, answer text).
"""

from .adapter_file import FAMILIES, INSIGHTEDIT_IAA, IP_ADAPTER, IP_ADAPTER_PLUS, read_adapter_sections
from .cross_attention_layers import BlockKey, CrossAttentionLayer, cross_attention_layers
from .decoupled_attention import ImageBranch, decoupled_attention
from .errors import AdapterFileError, InsightEditLoadError, MLLMLoadError
from .iaa import ImageAlignmentAdapter
from .image_projection import ImageProjModel, Resampler
from .ip_adapter import (
    INPUT_IMAGE_EMBEDS,
    INPUT_MM_HIDDEN_STATES,
    INPUT_PENULTIMATE,
    ImageAdapter,
    load_image_adapter,
)
from .mllm import DEFAULT_NUM_MM_TOKENS, MM_TOKEN_FORMAT, MLLMBundle, load_mllm
from .mllm_encode import as_pil_image, encode_instruction, split_answer
from .mllm_families import FAMILIES_BY_MODEL_TYPE, VLMFamily, recognise_vlm_family
from .query_mask import mask_to_query_weights, query_grid

__all__ = [
    "DEFAULT_NUM_MM_TOKENS",
    "FAMILIES",
    "FAMILIES_BY_MODEL_TYPE",
    "INPUT_IMAGE_EMBEDS",
    "INPUT_MM_HIDDEN_STATES",
    "INPUT_PENULTIMATE",
    "INSIGHTEDIT_IAA",
    "IP_ADAPTER",
    "IP_ADAPTER_PLUS",
    "MM_TOKEN_FORMAT",
    "AdapterFileError",
    "BlockKey",
    "CrossAttentionLayer",
    "ImageAdapter",
    "ImageAlignmentAdapter",
    "ImageBranch",
    "ImageProjModel",
    "InsightEditLoadError",
    "MLLMBundle",
    "MLLMLoadError",
    "Resampler",
    "VLMFamily",
    "as_pil_image",
    "cross_attention_layers",
    "decoupled_attention",
    "encode_instruction",
    "load_image_adapter",
    "load_mllm",
    "mask_to_query_weights",
    "query_grid",
    "read_adapter_sections",
    "recognise_vlm_family",
    "split_answer",
]
