"""attn2 layer keys in adapter weight order, and masks as per-query weights.

References: ComfyUI_IPAdapter_plus ``IPAdapterPlus.py`` ``ipadapter_execute`` (the SD1.5 and SDXL
block lists it patches, in weight order; its middle key ``("middle", 1)`` differs from ComfyUI
0.3.64's ``("middle", 0)``, which we follow), docs/kernels.md (16 / 70 layers, channels).
"""

from __future__ import annotations

import pytest
import torch

from lmm_edit.loaders.ip_adapter import cross_attention_layers, mask_to_query_weights, query_grid
from lmm_edit.selfcheck.ip_adapter_files import SD15_LDM_UNET_CONFIG, SDXL_LDM_UNET_CONFIG


def test_sd15_has_the_ipadapter_plus_block_list_with_channels():
    layers = cross_attention_layers(SD15_LDM_UNET_CONFIG)
    expected_keys = (
        [("input", i, 0) for i in (1, 2, 4, 5, 7, 8)]
        + [("output", i, 0) for i in range(3, 12)]
        + [("middle", 0, 0)]
    )
    assert [layer.block_key for layer in layers] == expected_keys
    assert [layer.channels for layer in layers] == [320, 320, 640, 640, 1280, 1280] + [1280] * 3 + [640] * 3 + [
        320
    ] * 3 + [1280]


def test_sdxl_has_seventy_layers_in_ipadapter_plus_order():
    expected = []
    for block in (4, 5, 7, 8):
        expected += [("input", block, t) for t in range(2 if block in (4, 5) else 10)]
    for block in range(6):
        expected += [("output", block, t) for t in range(2 if block in (3, 4, 5) else 10)]
    expected += [("middle", 0, t) for t in range(10)]

    layers = cross_attention_layers(SDXL_LDM_UNET_CONFIG)

    assert [layer.block_key for layer in layers] == expected
    assert sum(layer.channels == 640 for layer in layers) == 10 and len(layers) == 70


def test_query_grid_follows_the_unets_rounding_up_downsampling():
    assert query_grid(64 * 48, 64, 48) == (64, 48)
    assert query_grid(13 * 10, 25, 19) == (13, 10)  # ceil(25/2), ceil(19/2)
    assert query_grid(4 * 3, 25, 19) == (4, 3)
    with pytest.raises(ValueError, match="do not match a downsampling"):
        query_grid(100, 64, 48)


def test_left_half_mask_weights_the_left_half_of_the_query_rows():
    mask = torch.zeros(2, 64, 64)
    mask[:, :, :32] = 1.0
    weights = mask_to_query_weights(mask, 16 * 8, latent_height=32, latent_width=16)  # grid 16 x 8
    grid = weights.reshape(2, 16, 8)
    assert weights.shape == (2, 128)
    assert torch.all(grid[:, :, :4] == 1.0) and torch.all(grid[:, :, 4:] == 0.0)
