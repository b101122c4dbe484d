"""An edit blended into its source inside a soft mask, and the mask shown over the source: plain torch.

Tensors are ComfyUI's: IMAGE ``[B, H, W, C]`` floats in 0..1 (C = 3, or 4 with alpha), MASK ``[B, H, W]``
(or ``[H, W]``) in 0..1. The blend weights are zero wherever the (thresholded) mask is zero and the
feather only fades the edit INWARD from the mask's edge, so every pixel outside the mask is the
source's pixel exactly (``torch.where``, not arithmetic that could round). Editing models such as
SmartEdit regenerate the whole picture at their training size (256 px): outside the mask their output
is a blurred, colour-shifted copy of the source, which this puts back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COLOUR_MATCH_MODES = ("off", "mean", "mean_std")  # per-channel offset; offset and contrast
STATS_SIDE = 256  # colour statistics are taken on a copy this long (low-frequency; fast on big pictures)
RING_FRACTION = 0.08  # the "surroundings": a band this fraction of STATS_SIDE wide around the mask
MIN_RING_PIXELS = 16  # fewer pixels than this in the band: use everything outside the mask instead
GAIN_LIMITS = (0.5, 2.0)  # mean_std: contrast gain clamped, so a flat band cannot blow the edit up
OVERLAY_COLOURS = {
    "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.3, 1.0),
    "yellow": (1.0, 1.0, 0.0), "magenta": (1.0, 0.0, 1.0), "cyan": (0.0, 1.0, 1.0),
}


def as_mask_batch(mask: torch.Tensor) -> torch.Tensor:
    """MASK [H, W], [B, H, W] or [B, 1, H, W] -> float32 [B, H, W]."""
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    elif mask.ndim == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.ndim != 3:
        raise ValueError(f"a MASK is [H, W] or [B, H, W]; got shape {tuple(mask.shape)}")
    return mask.float()


def resize_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, h, w] -> [B, height, width], bilinear (area when shrinking), clamped to 0..1."""
    if tuple(mask.shape[-2:]) == (height, width):
        return mask
    mode = "area" if mask.shape[-2] >= height and mask.shape[-1] >= width else "bilinear"
    extra = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(mask.unsqueeze(1), size=(height, width), mode=mode, **extra)[:, 0].clamp(0.0, 1.0)


def resize_image(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """IMAGE [B, h, w, C] -> [B, height, width, C]: bicubic (antialiased when shrinking), clamped to 0..1."""
    if tuple(image.shape[1:3]) == (height, width):
        return image.float()
    channels_first = image.float().movedim(-1, 1)
    resized = F.interpolate(channels_first, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return resized.movedim(1, -1).clamp(0.0, 1.0)


def common_batch(**sizes: int) -> int:
    """The batch size several inputs broadcast to: each is 1 or the largest."""
    batch = max(sizes.values())
    wrong = {name: size for name, size in sizes.items() if size not in (1, batch)}
    if wrong:
        listed = ", ".join(f"{name} {size}" for name, size in sizes.items())
        raise ValueError(f"batch sizes do not match ({listed}): each input needs 1 item or {batch}")
    return batch


def _expand(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    return tensor if tensor.shape[0] == batch else tensor.expand(batch, *tensor.shape[1:])


def _min3(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Minimum over each pixel and its two neighbours along ``dim``; a missing neighbour (the border) is ignored."""
    out = mask.clone()
    length = mask.shape[dim]
    out.narrow(dim, 1, length - 1).copy_(torch.minimum(mask.narrow(dim, 1, length - 1), mask.narrow(dim, 0, length - 1)))
    body = out.narrow(dim, 0, length - 1)
    body.copy_(torch.minimum(body, mask.narrow(dim, 1, length - 1)))
    return out


def _erode(mask: torch.Tensor, step: int) -> torch.Tensor:
    """One grey-scale erosion of [B, H, W]: 3x3 square on even steps, plus-shaped on odd ones (an octagon
    over two steps, rounder than a square). Beyond the border the mask continues: an edit touching the
    picture's edge is not faded there."""
    if step % 2 == 0:
        return _min3(_min3(mask, 1), 2)
    return torch.minimum(_min3(mask, 1), _min3(mask, 2))


def feather_inward(mask: torch.Tensor, feather: int) -> torch.Tensor:
    """[B, H, W] -> the mean of its first ``feather`` erosions.

    For a binary mask this is min(d, feather) / feather, d = the pixel's (octagonal) distance to the
    outside, counted from 1 at the edge: a ramp from 1/feather at the edge to 1 at depth ``feather``.
    It is zero wherever the mask is, never above the mask, and pointwise non-increasing in ``feather``.
    """
    if feather <= 1:
        return mask
    total, current = mask.clone(), mask
    for step in range(feather - 1):
        current = _erode(current, step)
        total += current
    return total / feather


def blend_weights(mask: torch.Tensor, height: int, width: int, *, threshold: float = 0.0, feather: int = 0) -> torch.Tensor:
    """MASK -> blend weights [B, height, width] in 0..1: resized, thresholded, feathered inward.

    threshold > 0: the region is where the resized mask is at least ``threshold`` (1 inside, 0 outside),
    e.g. the half-maximum of the BIM's attention at 0.5; 0 keeps the mask's own soft values.
    feather: width in output pixels of the fade from the mask's edge inward; 0 = a hard edge.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in 0..1; got {threshold}")
    if feather < 0:
        raise ValueError(f"feather must be 0 or more pixels; got {feather}")
    weights = resize_mask(as_mask_batch(mask), height, width)
    if threshold > 0.0:
        weights = (weights >= threshold).float()
    return feather_inward(weights, int(feather))


def _dilate(region: torch.Tensor, steps: int) -> torch.Tensor:
    for step in range(steps):
        region = -_erode(-region, step)
    return region


def colour_statistics_band(weights: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, height, width] 0/1: the surroundings of the mask (a band just outside it) at the statistics size,
    or everything outside the mask when that band is too small."""
    region = (resize_mask(weights, height, width) > 0).float()
    ring_steps = max(2, round(RING_FRACTION * max(height, width)))
    band = _dilate(region, ring_steps) * (1.0 - region)
    small = band.flatten(1).sum(dim=1) < MIN_RING_PIXELS
    return torch.where(small[:, None, None], 1.0 - region, band)


def match_colour(edited: torch.Tensor, source: torch.Tensor, weights: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-channel correction of ``edited`` [B, H, W, C] so that, around the mask, it has the source's colour.

    The edit model should have left the surroundings as they were, so any difference there (a colour cast,
    an exposure or contrast change) is its drift; the same correction is applied to the edited region.
    mean: e + (mu_s - mu_e); mean_std: (e - mu_e) * clamp(sigma_s / sigma_e) + mu_s. Alpha is left alone.
    """
    if mode not in COLOUR_MATCH_MODES:
        raise ValueError(f"colour match must be one of {COLOUR_MATCH_MODES}; got {mode!r}")
    if mode == "off":
        return edited
    height, width = edited.shape[1:3]
    scale = min(1.0, STATS_SIDE / max(height, width))
    small_hw = (max(1, round(height * scale)), max(1, round(width * scale)))
    band = colour_statistics_band(weights, *small_hw).unsqueeze(-1)  # [B, h, w, 1]
    count = band.flatten(1).sum(dim=1).clamp_min(1.0)  # 0 in the band: the mask covers everything
    has_surroundings = (band.flatten(1).sum(dim=1) > 0)[:, None, None, None]
    rgb = slice(0, 3)

    def stats(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        small = resize_image(image[..., rgb], *small_hw)
        mean = (small * band).flatten(1, 2).sum(dim=1) / count[:, None]  # [B, 3]
        var = ((small - mean[:, None, None]) ** 2 * band).flatten(1, 2).sum(dim=1) / count[:, None]
        return mean, var.sqrt()

    mean_e, std_e = stats(edited)
    mean_s, std_s = stats(source)
    gain = torch.ones_like(mean_e)
    if mode == "mean_std":
        gain = (std_s / std_e.clamp_min(1e-6)).clamp(*GAIN_LIMITS)
    corrected = (edited[..., rgb] - mean_e[:, None, None]) * gain[:, None, None] + mean_s[:, None, None]
    corrected = torch.where(has_surroundings, corrected.clamp(0.0, 1.0), edited[..., rgb])
    return torch.cat([corrected, edited[..., 3:]], dim=-1)


def preserve_background(edited: torch.Tensor, source: torch.Tensor, mask: torch.Tensor, *, threshold: float = 0.0,
                        feather: int = 0, colour_match: str = "off") -> tuple[torch.Tensor, torch.Tensor]:
    """(IMAGE [B, H, W, C] at the source's size and channels, blend weights MASK [B, H, W]).

    ``edited`` of another size is resized to the source's; batches of 1 broadcast. Outside the mask the
    result is ``source`` bit for bit; inside it is ``source + w * (edited - source)``.
    """
    if edited.ndim != 4 or source.ndim != 4:
        raise ValueError(f"IMAGE inputs are [B, H, W, C]; got edited {tuple(edited.shape)}, source {tuple(source.shape)}")
    mask = as_mask_batch(mask).to(source.device)
    batch = common_batch(edited=edited.shape[0], source=source.shape[0], mask=mask.shape[0])
    height, width, channels = source.shape[1:]
    edited = _expand(resize_image(edited.to(source.device), height, width), batch)
    source = _expand(source, batch)
    if edited.shape[-1] < channels:  # an RGB edit of an RGBA source: the source's alpha
        edited = torch.cat([edited, source[..., edited.shape[-1]:].float()], dim=-1)
    edited = edited[..., :channels]
    weights = _expand(blend_weights(mask, height, width, threshold=threshold, feather=feather), batch)
    edited = match_colour(edited, source.float(), weights, colour_match)
    w = weights.unsqueeze(-1)
    blended = source.float() + w * (edited - source.float())
    out = torch.where(w > 0, blended.to(source.dtype), source)
    return out, weights


def overlay_mask(image: torch.Tensor, mask: torch.Tensor, *, colour: str = "red", opacity: float = 0.5) -> torch.Tensor:
    """IMAGE [B, H, W, C] with the mask [B, h, w] (resized to it) tinted in ``colour``: RGB [B, H, W, 3]."""
    if colour not in OVERLAY_COLOURS:
        raise ValueError(f"colour must be one of {sorted(OVERLAY_COLOURS)}; got {colour!r}")
    mask = as_mask_batch(mask)
    batch = common_batch(image=image.shape[0], mask=mask.shape[0])
    height, width = image.shape[1:3]
    alpha = opacity * _expand(resize_mask(mask, height, width), batch).unsqueeze(-1)
    tint = torch.tensor(OVERLAY_COLOURS[colour], dtype=torch.float32, device=image.device)
    rgb = _expand(image[..., :3].float(), batch)
    return rgb * (1.0 - alpha) + tint * alpha
