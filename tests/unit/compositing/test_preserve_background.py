"""loaders/compositing.py: the edit blended into the source inside a soft mask, exact outside it."""

from __future__ import annotations

import pytest
import torch

from lmm_edit.loaders.compositing import (
    GAIN_LIMITS,
    blend_weights,
    feather_inward,
    match_colour,
    overlay_mask,
    preserve_background,
)


def _images(batch=1, height=48, width=64, channels=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    source = torch.rand(batch, height, width, channels, generator=generator)
    edited = torch.rand(batch, height, width, channels, generator=generator)
    return edited, source


def _box_mask(height=48, width=64, top=12, left=16, bottom=36, right=48) -> torch.Tensor:
    mask = torch.zeros(1, height, width)
    mask[:, top:bottom, left:right] = 1.0
    return mask


def _blob_mask(height=48, width=64, seed=3) -> torch.Tensor:
    """An irregular region: thresholded smooth noise."""
    noise = torch.rand(1, 1, height // 8, width // 8, generator=torch.Generator().manual_seed(seed))
    smooth = torch.nn.functional.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False)
    return (smooth[:, 0] > 0.5).float()


@pytest.mark.parametrize("colour_match", ["off", "mean", "mean_std"])
@pytest.mark.parametrize("threshold, feather", [(0.0, 0), (0.5, 0), (0.5, 7), (0.0, 12)])
def test_every_pixel_outside_the_mask_is_the_source_bit_for_bit(threshold, feather, colour_match):
    edited, source = _images(batch=2)
    mask = _blob_mask() * 0.9  # soft values: threshold 0 keeps them, 0.5 makes them 1

    out, weights = preserve_background(edited, source, mask, threshold=threshold, feather=feather,
                                       colour_match=colour_match)

    outside = (mask == 0).expand(2, -1, -1)
    assert torch.equal(out[outside], source[outside])
    assert torch.equal(weights[outside], torch.zeros_like(weights[outside]))
    assert not torch.equal(out, source)  # the edit went in somewhere


def test_exact_outside_even_when_the_edit_has_nan_there():
    edited, source = _images()
    edited[:, :4] = float("nan")  # rows the mask does not reach
    out, _ = preserve_background(edited, source, _box_mask(), threshold=0.5)
    assert torch.equal(out[:, :12], source[:, :12])


def test_deep_inside_the_mask_the_result_is_the_edit():
    edited, source = _images()
    out, weights = preserve_background(edited, source, _box_mask(), threshold=0.5, feather=4)
    core = (slice(None), slice(16, 32), slice(20, 44))  # 4 px or more from the box's edge
    assert torch.equal(weights[core], torch.ones_like(weights[core]))
    torch.testing.assert_close(out[core], edited[core], rtol=0, atol=1e-7)


def test_feather_is_a_linear_ramp_from_the_edge_to_the_feather_width():
    """Reference: min(d, feather) / feather, d = the pixel's distance to the outside counted from 1 at the edge."""
    feather = 6
    weights = blend_weights(_box_mask(), 48, 64, threshold=0.5, feather=feather)
    row = weights[0, 24, 16:32]  # from the box's left edge to its middle, far from its other edges
    expected = torch.tensor([min(d, feather) / feather for d in range(1, 17)])
    torch.testing.assert_close(row, expected, rtol=0, atol=1e-6)


def test_feather_never_increases_the_weights_and_grows_monotonically_inward():
    mask = _blob_mask(96, 128)
    previous = blend_weights(mask, 96, 128, threshold=0.5, feather=0)
    for feather in (2, 3, 5, 8, 13):
        weights = blend_weights(mask, 96, 128, threshold=0.5, feather=feather)
        assert bool((weights <= previous + 1e-7).all()), f"feather {feather} raised a weight"
        previous = weights
    box = blend_weights(_box_mask(96, 128, 10, 10, 90, 120), 96, 128, threshold=0.5, feather=20)[0, 50, 10:65]
    assert bool((box[1:] >= box[:-1]).all())


def test_a_mask_touching_the_picture_border_is_not_faded_there():
    mask = torch.zeros(1, 32, 32)
    mask[:, :, :16] = 1.0
    weights = feather_inward(mask, 8)
    assert torch.equal(weights[0, 16, :8], torch.ones(8))  # 8+ px from the mask's only edge (column 16)


def test_threshold_binarises_and_zero_keeps_the_soft_mask():
    mask = torch.zeros(1, 8, 8)
    mask[:, :, :4], mask[:, :, 4:] = 0.3, 0.7
    assert torch.equal(blend_weights(mask, 8, 8, threshold=0.5)[0, 0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert torch.equal(blend_weights(mask, 8, 8, threshold=0.0), mask)


def test_an_edit_of_another_size_is_resized_to_the_source():
    source = torch.rand(1, 96, 72, 3)
    small_edit = torch.full((1, 32, 24, 3), 0.25)
    out, weights = preserve_background(small_edit, source, torch.ones(1, 16, 16))
    assert out.shape == source.shape and weights.shape == (1, 96, 72)
    torch.testing.assert_close(out, torch.full_like(source, 0.25), rtol=0, atol=1e-6)


def test_mask_of_another_size_and_layout_is_resized_to_the_source():
    edited, source = _images()
    small = _box_mask()[:, ::4, ::4]  # [1, 12, 16]: the box scaled down exactly
    for layout in (small[0], small, small.unsqueeze(1)):  # [H, W], [B, H, W], [B, 1, H, W]
        out, weights = preserve_background(edited, source, layout, threshold=0.5)
        assert weights.shape == (1, 48, 64)
        assert torch.equal(out[:, :8], source[:, :8])  # above the box
        torch.testing.assert_close(out[:, 20:28, 24:40], edited[:, 20:28, 24:40])  # inside it


def test_batches_of_one_broadcast_and_other_mismatches_are_refused():
    edited, _ = _images(batch=3)
    _, source = _images(batch=1, seed=1)
    masks = torch.cat([_box_mask(), torch.zeros(1, 48, 64), torch.ones(1, 48, 64)])

    out, _ = preserve_background(edited, source, masks)

    assert out.shape == (3, 48, 64, 3)
    assert torch.equal(out[1], source[0])  # empty mask: untouched
    torch.testing.assert_close(out[2], edited[2])  # full mask: the edit
    with pytest.raises(ValueError, match="batch sizes do not match.*edited 3.*source 2"):
        preserve_background(edited, torch.rand(2, 48, 64, 3), masks)


def test_rgba_source_keeps_its_alpha_and_an_rgba_edit_of_an_rgb_source_drops_its_own():
    edited, source = _images(channels=3)
    rgba_source = torch.cat([source, torch.rand(1, 48, 64, 1)], dim=-1)
    out, _ = preserve_background(edited, rgba_source, torch.ones(1, 48, 64))
    assert out.shape[-1] == 4 and torch.equal(out[..., 3], rgba_source[..., 3])
    out, _ = preserve_background(torch.cat([edited, torch.zeros(1, 48, 64, 1)], dim=-1), source, torch.ones(1, 48, 64))
    assert out.shape[-1] == 3
    batch_of_rgba = torch.rand(3, 48, 64, 4)
    out, _ = preserve_background(edited, batch_of_rgba, torch.ones(1, 48, 64))  # one RGB edit, three RGBA sources
    assert out.shape == (3, 48, 64, 4) and torch.equal(out[..., 3], batch_of_rgba[..., 3])


def test_mean_std_matching_undoes_a_per_channel_exposure_and_colour_drift():
    _, source = _images(height=64, width=64)
    gain, offset = torch.tensor([0.7, 0.8, 0.9]), torch.tensor([0.2, 0.05, 0.1])
    drifted = source * gain + offset  # what an edit model does to pixels it should have left alone
    mask = _box_mask(64, 64, 20, 20, 44, 44)

    corrected = match_colour(drifted, source, mask, "mean_std")

    torch.testing.assert_close(corrected, source, rtol=0, atol=1e-5)
    assert bool(((1 / gain >= GAIN_LIMITS[0]) & (1 / gain <= GAIN_LIMITS[1])).all())  # inside the clamp


def test_mean_matching_removes_an_offset_and_off_leaves_the_edit_alone():
    _, source = _images()
    source = source * 0.8 + 0.1
    shifted = source - torch.tensor([0.1, 0.0, 0.05])
    mask = _box_mask()
    torch.testing.assert_close(match_colour(shifted, source, mask, "mean"), source, rtol=0, atol=1e-5)
    assert match_colour(shifted, source, mask, "off") is shifted
    with pytest.raises(ValueError, match="colour match"):
        match_colour(shifted, source, mask, "histogram")


def test_colour_matching_is_skipped_when_the_mask_covers_everything():
    edited, source = _images()
    assert torch.equal(match_colour(edited, source, torch.ones(1, 48, 64), "mean_std"), edited)


def test_out_of_range_settings_are_refused_with_the_allowed_range():
    with pytest.raises(ValueError, match="threshold must be in 0..1"):
        blend_weights(_box_mask(), 48, 64, threshold=1.5)
    with pytest.raises(ValueError, match="feather must be 0 or more"):
        blend_weights(_box_mask(), 48, 64, feather=-1)
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        preserve_background(torch.rand(48, 64, 3), torch.rand(1, 48, 64, 3), _box_mask())


def test_overlay_tints_the_masked_pixels_and_leaves_the_rest():
    _, source = _images()
    mask = _box_mask()
    out = overlay_mask(source, mask, colour="red", opacity=1.0)
    assert torch.equal(out[0, 20, 20], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(out[0, 0], source[0, 0])
    half = overlay_mask(source, mask, colour="green", opacity=0.5)
    torch.testing.assert_close(half[0, 20, 20], source[0, 20, 20] * 0.5 + torch.tensor([0.0, 0.5, 0.0]))
    assert overlay_mask(torch.rand(2, 48, 64, 4), mask).shape == (2, 48, 64, 3)
