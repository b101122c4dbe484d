"""Non-square latents: v' must be the reference's math with the interpolation size in (height, width) order.

The reference calls F.interpolate(size=(latent_w, latent_h)) and only runs squares; square results are
covered by the parity tests, these pin the orientation for the rest."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmm_edit.loaders.smartedit.conditioning import run_bim

FP32_TOL = 1e-4


@pytest.mark.parametrize("latent_hw", [(24, 40), (40, 24), (17, 33)])
def test_image_residual_has_the_latent_orientation(models, fixture, rel_err, latent_hw):
    s4, s1 = fixture.stage[4], fixture.stage[1]
    keys = s4["two_way_keys_out"]  # [1, g*g, C] from the reference
    b, p, c = keys.shape
    g = int(p**0.5)
    grid = keys.transpose(1, 2).reshape(b, c, g, g)
    conv = models.bridge.bim.dimension_reduction_head_zeroconv
    with torch.no_grad():
        expected = conv(F.interpolate(grid, size=latent_hw, mode="bilinear", align_corners=False))
        ours = run_bim(models.bridge.bim, s4["bim_in_query_output"], s1["clip_image_features"], latent_hw).image_residual
    assert ours.shape[-2:] == latent_hw
    assert rel_err(ours, expected) < FP32_TOL


def test_text_conditioning_does_not_depend_on_the_latent_size(models, fixture):
    s4, s1 = fixture.stage[4], fixture.stage[1]
    with torch.no_grad():
        a = run_bim(models.bridge.bim, s4["bim_in_query_output"], s1["clip_image_features"], (24, 40)).text_residual
        b = run_bim(models.bridge.bim, s4["bim_in_query_output"], s1["clip_image_features"], (32, 32)).text_residual
    assert torch.equal(a, b)
