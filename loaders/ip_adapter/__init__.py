"""IP-Adapter and InsightEdit's IAA: one image branch through decoupled cross-attention, in pure torch.

- ``files.py``: adapter files (IP-Adapter base 4-token, Plus 16-token, InsightEdit IAA, InstructAny2Pix's SDXL
  global-local adapter), recognised by keys.
- ``load.py``: ``load_image_adapter`` assembles an ``ImageAdapter`` (projection + to_k_ip / to_v_ip).
- model modules: ``image_projection.py`` (ImageProjModel, Resampler), ``iaa.py`` (the IAA's mapper),
  ``global_local.py`` (InstructAny2Pix's two-view projection fed an embedding).
- ``image_tokens.py``: the adapter's input -> conditional / unconditional image tokens.
- the attn2 patch: ``image_branch_patch.py`` calls ``decoupled_attention.py`` (text attention + lambda-weighted
  image branches) on the layers ``cross_attention_layers.py`` lists; ``query_mask.py`` maps a mask onto them.
"""

from .cross_attention_layers import BlockKey, CrossAttentionLayer, cross_attention_layers
from .decoupled_attention import ImageBranch, decoupled_attention
from .files import ANY2PIX_GLOBAL_LOCAL, FAMILIES, INSIGHTEDIT_IAA, IP_ADAPTER, IP_ADAPTER_PLUS, read_adapter_sections
from .iaa import ImageAlignmentAdapter
from .image_projection import ImageProjModel, Resampler
from .load import (
    INPUT_EMBEDDING,
    INPUT_IMAGE_EMBEDS,
    INPUT_MM_HIDDEN_STATES,
    INPUT_PENULTIMATE,
    ImageAdapter,
    load_image_adapter,
)
from .query_mask import mask_to_query_weights, query_grid

__all__ = [
    "ANY2PIX_GLOBAL_LOCAL",
    "FAMILIES",
    "INPUT_EMBEDDING",
    "INPUT_IMAGE_EMBEDS",
    "INPUT_MM_HIDDEN_STATES",
    "INPUT_PENULTIMATE",
    "INSIGHTEDIT_IAA",
    "IP_ADAPTER",
    "IP_ADAPTER_PLUS",
    "BlockKey",
    "CrossAttentionLayer",
    "ImageAdapter",
    "ImageAlignmentAdapter",
    "ImageBranch",
    "ImageProjModel",
    "Resampler",
    "cross_attention_layers",
    "decoupled_attention",
    "load_image_adapter",
    "mask_to_query_weights",
    "query_grid",
    "read_adapter_sections",
]
