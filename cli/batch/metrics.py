"""Edit metrics with torchmetrics, as TencentARC/SmartEdit test/metrics_evaluation.py @ 858146e (no ComfyUI here).

The reference's conventions, kept: every picture is resized to ``metrics_size`` x ``metrics_size``
(256; bicubic, the mask nearest), pixels are /255 floats, PSNR and SSIM use ``data_range=1``, LPIPS
is torchmetrics' with ``net_type='squeeze'`` on [-1, 1] inputs, the mask is ``L / 255`` and the
background numbers compare the SOURCE with the edit, both multiplied by ``1 - mask``; the CLIP score
is torchmetrics' (``max(100 cos, 0)``) of the edit cropped to the mask's box against the caption.

Names in the results line:
    psnr, ssim, l1, lpips, clip_image          edit vs target_image, whole picture
    psnr_inside, ssim_inside                   edit vs target_image, both multiplied by the mask
    psnr_outside, ssim_outside, lpips_outside, mse_outside
                                               edit vs the source, both multiplied by 1 - mask
                                               (the background preservation of SmartEdit's Reason-Edit)
    clip_text                                  edit (cropped to the mask's box) vs target_caption
A value is a float, or a string: "undefined: ..." (e.g. a mask covering the whole picture has no
outside) or "unavailable: ..." (a model file is missing).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchmetrics.functional import mean_absolute_error, mean_squared_error
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.functional.multimodal import clip_score

METRICS_SIZE = 256  # metrics_evaluation.py: metrics_size = 256
DATA_RANGE = 1.0  # PeakSignalNoiseRatio(data_range=1.0), StructuralSimilarityIndexMeasure(data_range=1.0)
METRIC_NAMES = ("psnr", "ssim", "l1", "lpips", "clip_image", "psnr_inside", "ssim_inside", "psnr_outside",
                "ssim_outside", "lpips_outside", "mse_outside", "clip_text")  # the order of the summary
WHOLE_MASK = "undefined: the mask covers the whole image, so nothing is outside it"
EMPTY_MASK = "undefined: the mask is empty, so nothing is inside it"


@dataclass
class MetricModels:
    """The learned metrics' models, or why each is unavailable (see metric_models.py)."""

    lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # [-1, 1] (1, 3, H, W) pairs
    lpips_missing: str = "unavailable: LPIPS was not loaded"
    clip: Callable[[], tuple] | None = None  # () -> (CLIPModel, CLIPProcessor), as torchmetrics' clip_score takes
    clip_missing: str = "unavailable: no CLIP model was loaded"
    clip_name: str | None = None
    device: torch.device = torch.device("cpu")


def open_rgb(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def open_mask(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("L")


def _resized(picture: Image.Image, size: tuple[int, int], resample: int) -> Image.Image:
    return picture if picture.size == size else picture.resize(size, resample=resample)


def to_unit(picture: Image.Image) -> torch.Tensor:
    """PIL RGB -> (1, 3, H, W) float32 in [0, 1], as the reference's np.array(img) / 255."""
    return torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255).permute(2, 0, 1).unsqueeze(0).contiguous()


def mask_weights(mask: Image.Image) -> torch.Tensor:
    """PIL L -> (1, 1, H, W) weights mask / 255 (the reference: np.asarray(mask, dtype=np.int64) / 255)."""
    return torch.from_numpy(np.asarray(mask, dtype=np.int64) / 255).float()[None, None]


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """inf for identical pictures."""
    return float(peak_signal_noise_ratio(pred, target, data_range=DATA_RANGE))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(structural_similarity_index_measure(pred, target, data_range=DATA_RANGE))


def l1(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(mean_absolute_error(pred, target))


def mse(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(mean_squared_error(pred.contiguous(), target.contiguous()))


def mask_box(mask: Image.Image) -> tuple[int, int, int, int] | None:
    """The reference's crop box: (min x, min y, max x, max y) of the non-zero pixels, max exclusive as PIL
    reads it (so its last row and column fall outside; kept for comparable scores). None: empty mask."""
    ys, xs = np.where(np.asarray(mask))
    if len(xs) == 0:
        return None
    left, top, right, bottom = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    return left, top, max(right, left + 1), max(bottom, top + 1)  # a one-pixel box would crop to nothing


def _clip(models: MetricModels, picture: Image.Image, other) -> float | str:
    if models.clip is None:
        return models.clip_missing
    as_tensor = torch.from_numpy(np.array(picture)).permute(2, 0, 1).to(models.device)  # uint8 (3, H, W)
    if isinstance(other, Image.Image):
        other = torch.from_numpy(np.array(other)).permute(2, 0, 1).to(models.device)
    with torch.no_grad():
        return float(clip_score(as_tensor, other, model_name_or_path=models.clip))


def _lpips(models: MetricModels, pred: torch.Tensor, target: torch.Tensor) -> float | str:
    if models.lpips is None:
        return models.lpips_missing
    return float(models.lpips(pred * 2 - 1, target * 2 - 1))


def edit_metrics(edited: Image.Image, source: Image.Image, *, target: Image.Image | None = None,
                 mask: Image.Image | None = None, caption: str | None = None,
                 models: MetricModels | None = None, size: int | None = METRICS_SIZE) -> dict[str, float | str]:
    """Every metric the item's fields allow (a target, a mask, a caption); see the module docstring.

    size: side of the square every picture is resized to (the reference's 256); None keeps the edit's size.
    """
    models = models or MetricModels()
    shape = (size, size) if size else edited.size
    edited = _resized(edited, shape, Image.Resampling.BICUBIC)
    pred = to_unit(edited)
    out: dict[str, float | str] = {}
    weights = None
    if mask is not None:
        mask = _resized(mask, shape, Image.Resampling.NEAREST)
        weights = mask_weights(mask)
    if target is not None:
        goal = to_unit(_resized(target, shape, Image.Resampling.BICUBIC))
        out.update(psnr=psnr(pred, goal), ssim=ssim(pred, goal), l1=l1(pred, goal), lpips=_lpips(models, pred, goal),
                   clip_image=_clip(models, edited, _resized(target, shape, Image.Resampling.BICUBIC)))
        if weights is not None:
            if float(weights.sum()) == 0:
                out.update(psnr_inside=EMPTY_MASK, ssim_inside=EMPTY_MASK)
            else:
                out.update(psnr_inside=psnr(pred * weights, goal * weights),
                           ssim_inside=ssim(pred * weights, goal * weights))
    if weights is not None:
        keep = 1 - weights
        if float(keep.sum()) == 0:
            out.update(psnr_outside=WHOLE_MASK, ssim_outside=WHOLE_MASK, lpips_outside=WHOLE_MASK,
                       mse_outside=WHOLE_MASK)
        else:
            original = to_unit(_resized(source, shape, Image.Resampling.BICUBIC)) * keep
            kept = pred * keep
            out.update(psnr_outside=psnr(kept, original), ssim_outside=ssim(kept, original),
                       lpips_outside=_lpips(models, kept, original), mse_outside=mse(kept, original))
    if caption:
        box = mask_box(mask) if mask is not None else None
        out["clip_text"] = _clip(models, edited.crop(box) if box else edited, caption)
    return out
