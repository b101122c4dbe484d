"""The UNet cross-attention (attn2) layers an image adapter patches, in the order its weights use.

IP-Adapter files number their per-layer weights ``ip_adapter.<2n+1>.to_k_ip.weight`` for the n-th
attn2 layer in diffusers' ``unet.attn_processors`` order (diffusers ``loaders/unet.py``,
``_convert_ip_adapter_attn_to_diffusers``: ``key_id`` starts at 1 and steps by 2 over attn2 layers).
That order is down blocks, then up blocks, then the mid block; in ComfyUI's (LDM) terms: input
blocks, output blocks, middle block, each transformer block in turn. For SD1.5 that gives input
1, 2, 4, 5, 7, 8; output 3..11; middle (ComfyUI_IPAdapter_plus ``IPAdapterPlus.py``,
``ipadapter_execute``, uses the same list; it keys the middle block ``("middle", 1)``, but
ComfyUI 0.3.64 ``openaimodel.py`` sets ``transformer_options["block"] = ("middle", 0)``, which is
what an attn2 replace patch is looked up by).

ComfyUI looks an attn2 replace patch up by ``(block_name, block_id, transformer_index)`` first
(``comfy/ldm/modules/attention.py``, ``BasicTransformerBlock.forward``), so the keys here are
3-tuples, valid for SD1.5 (one transformer per block) and SDXL (2 or 10) alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

BlockKey = tuple[str, int, int]


@dataclass(frozen=True)
class CrossAttentionLayer:
    """One attn2 layer: its ComfyUI patch key and its channel count (``to_k_ip`` out-features)."""

    block_key: BlockKey
    channels: int


def _as_list(value: int | Sequence[int], levels: int) -> list[int]:
    if isinstance(value, int):
        return [value] * levels
    return list(value)


def cross_attention_layers(unet_config: Mapping[str, object]) -> list[CrossAttentionLayer]:
    """attn2 layers of an LDM UNet in IP-Adapter weight order, from ComfyUI's detected ``unet_config``.

    Reads ``model_channels``, ``channel_mult``, ``num_res_blocks``, ``transformer_depth`` (one entry
    per input res block), ``transformer_depth_output`` (one per output block, consumed from the end
    as ``openaimodel.UNetModel`` pops it) and ``transformer_depth_middle`` (< 0: no middle attention).
    """
    channel_mult = list(unet_config["channel_mult"])
    levels = len(channel_mult)
    model_channels = int(unet_config["model_channels"])
    num_res_blocks = _as_list(unet_config["num_res_blocks"], levels)
    depth_in = list(unet_config["transformer_depth"])
    depth_out = list(unet_config["transformer_depth_output"])
    depth_middle = int(unet_config.get("transformer_depth_middle", depth_in[-1] if depth_in else 0))

    layers: list[CrossAttentionLayer] = []
    block_id, res_index = 1, 0  # input block 0 is conv_in
    for level in range(levels):
        channels = model_channels * channel_mult[level]
        for _ in range(num_res_blocks[level]):
            layers += [CrossAttentionLayer(("input", block_id, t), channels) for t in range(depth_in[res_index])]
            block_id += 1
            res_index += 1
        if level != levels - 1:
            block_id += 1  # downsample block

    block_id = 0
    for level in reversed(range(levels)):
        channels = model_channels * channel_mult[level]
        for _ in range(num_res_blocks[level] + 1):
            depth = depth_out[len(depth_out) - 1 - block_id]
            layers += [CrossAttentionLayer(("output", block_id, t), channels) for t in range(depth)]
            block_id += 1

    middle_channels = model_channels * channel_mult[-1]
    layers += [CrossAttentionLayer(("middle", 0, t), middle_channels) for t in range(max(depth_middle, 0))]
    return layers


def weight_module_key(layer_index: int) -> str:
    """The number an IP-Adapter file uses for the n-th layer: ``2n+1`` (``ip_adapter.<2n+1>.to_k_ip.weight``)."""
    return str(2 * layer_index + 1)
