"""Our decoupled attention on a UNet equals diffusers' IP-Adapter processor on the same weights.

Reference: diffusers' ``IPAdapterMixin.load_ip_adapter`` (file reading, ``_load_ip_adapter_weights``,
``IPAdapterAttnProcessor2_0``) on a tiny SD1.5-layout ``UNet2DConditionModel``, run with
``added_cond_kwargs={"image_embeds": ...}``. Ours: the same UNet weights, every attn2 processor
replaced by one that calls the pack's own attn2 replace patch (``ImageBranchPatch``) as ComfyUI's
``CrossAttention`` calls it: ``to_q/to_k/to_v``, the patch with the image tokens in ``extra_options``, ``to_out``.
"""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders import IPAdapterMixin
from diffusers.models.attention_processor import AttnProcessor2_0, IPAdapterAttnProcessor2_0

from lmm_edit.loaders.ip_adapter import cross_attention_layers, load_image_adapter
from lmm_edit.loaders.ip_adapter.image_branch_patch import TOKEN_KEY_FORMAT, ImageBranchPatch, ImageBranchSettings
from lmm_edit.selfcheck.ip_adapter_files import (
    TINY_CONTEXT_DIM,
    TINY_SD15_LDM_UNET_CONFIG,
    TINY_SD15_UNET_CONFIG,
    tiny_ip_adapter_state,
    write_adapter_file,
)

FP32_TOLERANCE = 2e-5
CLIP_DIM = 24
TOKEN_KEY = TOKEN_KEY_FORMAT.format(0)


class _UNetHost(IPAdapterMixin):
    """The smallest pipeline-like object diffusers' ``load_ip_adapter`` accepts: a ``unet`` and no image encoder."""

    def __init__(self, unet: UNet2DConditionModel) -> None:
        self.unet = unet
        self.image_encoder = None


class _PatchAsProcessor:
    """The pack's attn2 replace patch in a diffusers UNet, called as ComfyUI's ``CrossAttention.forward`` calls it."""

    def __init__(self, patch: ImageBranchPatch, tokens: torch.Tensor) -> None:
        self.patch, self.tokens = patch, tokens

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        q = attn.to_q(hidden_states)  # [B, Lq, H*D]
        k = attn.to_k(encoder_hidden_states)  # [B, 77, H*D]
        v = attn.to_v(encoder_hidden_states)
        extra_options = {"n_heads": attn.heads, "cond_or_uncond": [0], TOKEN_KEY: self.tokens}
        return attn.to_out[1](attn.to_out[0](self.patch(q, k, v, extra_options)))


def _tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_SD15_UNET_CONFIG).eval()
    return unet


def _install_ours(unet: UNet2DConditionModel, adapter, tokens: torch.Tensor, weight) -> None:
    processors = {}
    layer_index = 0
    for name in unet.attn_processors:  # diffusers' order: down, up, mid — the adapter's layer order
        if name.endswith("attn2.processor"):
            settings = ImageBranchSettings(TOKEN_KEY, adapter, (weight,))
            processors[name] = _PatchAsProcessor(ImageBranchPatch(layer_index, [settings]), tokens)
            layer_index += 1
        else:
            processors[name] = AttnProcessor2_0()
    unet.set_attn_processor(processors)
    assert layer_index == len(adapter.to_k_ip) == 16


def _inputs(batch: int, variant: str):
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(batch, 4, 8, 8, generator=generator)  # 8x8 latent: 4x4, 2x2, 1x1 further down
    text = torch.randn(batch, 77, TINY_CONTEXT_DIM, generator=generator)
    if variant == "basic":
        clip = torch.randn(batch, CLIP_DIM, generator=generator)  # image_embeds
    else:
        clip = torch.randn(batch, 257, CLIP_DIM, generator=generator)  # penultimate hidden states
    return sample, text, clip


@pytest.mark.parametrize(
    ("variant", "suffix", "scale"),
    [("basic", ".safetensors", 1.0), ("basic", ".bin", 0.6), ("plus", ".safetensors", 0.6), ("plus", ".bin", 1.0)],
)
def test_unet_with_our_decoupled_attention_equals_diffusers_ip_adapter(tmp_path, variant, suffix, scale):
    path = write_adapter_file(tiny_ip_adapter_state(variant, clip_dim=CLIP_DIM), tmp_path / f"ip-adapter{suffix}")
    reference_unet = _tiny_unet()
    our_unet = copy.deepcopy(reference_unet)

    host = _UNetHost(reference_unet)
    host.load_ip_adapter(str(tmp_path), subfolder="", weight_name=path.name, image_encoder_folder=None)
    host.set_ip_adapter_scale(scale)
    assert any(isinstance(p, IPAdapterAttnProcessor2_0) for p in reference_unet.attn_processors.values())

    adapter = load_image_adapter(path)
    sample, text, clip = _inputs(2, variant)
    _install_ours(our_unet, adapter, adapter.image_tokens(clip), scale)

    with torch.no_grad():
        expected = reference_unet(sample, 10, text, added_cond_kwargs={"image_embeds": [clip[:, None]]}).sample
        ours = our_unet(sample, 10, text).sample
        text_only = copy.deepcopy(our_unet)
        text_only.set_attn_processor(AttnProcessor2_0())
        without_image = text_only(sample, 10, text).sample

    assert (expected - without_image).abs().max() > 1e-2  # the image branch matters at this scale
    torch.testing.assert_close(ours, expected, atol=FP32_TOLERANCE, rtol=FP32_TOLERANCE)


def test_layer_order_of_our_block_keys_is_diffusers_attn_processor_order():
    # diffusers <-> LDM naming of SD1.5 (comfy/utils.py unet_to_diffusers): down_blocks.i.attentions.j is
    # input block 3i+j+1, up_blocks.i.attentions.j is output block 3i+j, mid_block is middle 0.
    def block_key(name: str) -> tuple[str, int, int]:
        parts = name.split(".")
        if parts[0] == "mid_block":
            return ("middle", 0, int(parts[4]))
        i, j, t = int(parts[1]), int(parts[3]), int(parts[5])
        return ("input", 3 * i + j + 1, t) if parts[0] == "down_blocks" else ("output", 3 * i + j, t)

    unet = _tiny_unet()
    attn2 = [name for name in unet.attn_processors if name.endswith("attn2.processor")]
    modules = dict(unet.named_modules())
    expected = [(block_key(name), modules[name.removesuffix(".processor")].to_q.out_features) for name in attn2]

    layers = cross_attention_layers(TINY_SD15_LDM_UNET_CONFIG)
    assert [(layer.block_key, layer.channels) for layer in layers] == expected
