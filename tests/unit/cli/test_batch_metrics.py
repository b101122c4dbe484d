"""Batch metrics against known values and against TencentARC/SmartEdit test/metrics_evaluation.py's procedure."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from lmm_edit.cli.batch.metric_models import find_clip_folder, load_metric_models
from lmm_edit.cli.batch.metrics import EMPTY_MASK, WHOLE_MASK, edit_metrics
from tiny_clip import write_tiny_clip

SIZE = 256  # pictures already at the metrics size are compared as they are


def _rgb(array) -> Image.Image:
    return Image.fromarray(np.asarray(array, dtype=np.uint8))


def _noisy(seed=0, size=(96, 128)) -> Image.Image:
    return _rgb(np.random.default_rng(seed).integers(0, 256, (*size, 3)))


def _mask(box=None, size=(96, 128)) -> Image.Image:
    mask = np.zeros(size, dtype=np.uint8)
    if box == "all":
        mask[:] = 255
    elif box is not None:
        top, bottom, left, right = box
        mask[top:bottom, left:right] = 255
    return Image.fromarray(mask)


def test_identical_pictures_give_infinite_psnr_ssim_one_and_zero_l1():
    picture = _noisy()
    out = edit_metrics(picture, picture, target=picture)
    assert out["psnr"] == math.inf
    assert out["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert out["l1"] == 0.0


def test_known_noise_level_gives_the_analytic_psnr():
    gray = np.full((SIZE, SIZE, 3), 128)
    signs = np.random.default_rng(1).choice([-1, 1], size=gray.shape)
    out = edit_metrics(_rgb(gray + 8 * signs), _rgb(gray), target=_rgb(gray))
    # every pixel off by exactly 8/255: MSE = (8/255)^2, PSNR = 20 log10(255 / 8)
    assert out["psnr"] == pytest.approx(20 * math.log10(255 / 8), abs=1e-4)
    assert out["l1"] == pytest.approx(8 / 255, abs=1e-6)


def test_a_mask_covering_the_whole_image_leaves_the_outside_undefined():
    out = edit_metrics(_noisy(0), _noisy(1), target=_noisy(2), mask=_mask("all"))
    for name in ("psnr_outside", "ssim_outside", "lpips_outside", "mse_outside"):
        assert out[name] == WHOLE_MASK
    assert isinstance(out["psnr_inside"], float)


def test_an_empty_mask_leaves_the_inside_undefined():
    out = edit_metrics(_noisy(0), _noisy(1), target=_noisy(2), mask=_mask(None))
    assert out["psnr_inside"] == out["ssim_inside"] == EMPTY_MASK
    assert isinstance(out["psnr_outside"], float)


def test_without_target_or_mask_only_the_caption_score_is_asked_for():
    assert set(edit_metrics(_noisy(0), _noisy(1), caption="a cat")) == {"clip_text"}
    assert edit_metrics(_noisy(0), _noisy(1), caption="a cat")["clip_text"].startswith("unavailable")


def _smartedit_background(original: Image.Image, edited: Image.Image, mask_jpg: bytes) -> dict:
    """metrics_evaluation.py's background preservation, step by step (its MetricsCalculator, class metrics)."""
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
    from torchmetrics.regression import MeanSquaredError

    metrics_size = 256
    mask_image = Image.open(io.BytesIO(mask_jpg)).convert("L")
    original_image = original.resize((metrics_size, metrics_size), resample=Image.Resampling.BICUBIC)
    edited_image = edited.resize((metrics_size, metrics_size), resample=Image.Resampling.BICUBIC)
    mask_image = mask_image.resize((metrics_size, metrics_size), resample=Image.Resampling.NEAREST)
    mask_image = np.asarray(mask_image, dtype=np.int64) / 255
    mask_image = 1 - mask_image
    mask_image = mask_image[:, :, np.newaxis].repeat([3], axis=2)

    def prepare(img_pred, img_gt):
        img_pred = np.array(img_pred).astype(np.float32) / 255 * mask_image.astype(np.float32)
        img_gt = np.array(img_gt).astype(np.float32) / 255 * mask_image.astype(np.float32)
        return torch.tensor(img_pred).permute(2, 0, 1), torch.tensor(img_gt).permute(2, 0, 1)

    pred, gt = prepare(original_image, edited_image)
    return dict(psnr_outside=PeakSignalNoiseRatio(data_range=1.0)(pred[None], gt[None]).item(),
                ssim_outside=StructuralSimilarityIndexMeasure(data_range=1.0)(pred[None], gt[None]).item(),
                mse_outside=MeanSquaredError()(pred.contiguous(), gt.contiguous()).item())


def test_background_preservation_follows_smartedit_reference_procedure():
    original, edited = _noisy(3), _noisy(4)
    jpg = io.BytesIO()
    _mask((20, 70, 30, 90)).save(jpg, format="JPEG")  # the reference's masks are JPEGs: values off 0/255 too
    ours = edit_metrics(edited, original, mask=Image.open(io.BytesIO(jpg.getvalue())).convert("L"))
    reference = _smartedit_background(original, edited, jpg.getvalue())
    for name, value in reference.items():
        assert ours[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name


@pytest.fixture(scope="module")
def clip_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip_vision")
    write_tiny_clip(root / "tiny-clip")
    return root


def _clip_score(folder, picture: Image.Image, text: str) -> float:
    """CLIPScore's definition, max(100 cos(E_image, E_text), 0), straight from transformers."""
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(str(folder)), CLIPProcessor.from_pretrained(str(folder))
    with torch.no_grad():
        image = model.get_image_features(processor(images=[picture], return_tensors="pt")["pixel_values"])
        words = processor(text=[text], return_tensors="pt", padding=True)
        text_features = model.get_text_features(words["input_ids"], words["attention_mask"])
    image, text_features = [f if isinstance(f, torch.Tensor) else f.pooler_output for f in (image, text_features)]
    cosine = torch.nn.functional.cosine_similarity(image, text_features).item()
    return max(100 * cosine, 0.0)


def test_clip_text_scores_the_mask_box_as_the_reference_crops_it(clip_root):
    models = load_metric_models([clip_root])
    edited, mask = _noisy(5), _mask((10, 50, 20, 60))
    ours = edit_metrics(edited, _noisy(6), mask=mask, caption="a red cup", models=models)["clip_text"]
    # metrics_evaluation.py: resize to 256, box of the non-zero mask pixels, PIL crop (left, top, right, bottom)
    edited_256 = edited.resize((256, 256), resample=Image.Resampling.BICUBIC)
    y, x = np.where(np.array(mask.resize((256, 256), resample=Image.Resampling.NEAREST)))
    cropped = edited_256.crop((np.min(x), np.min(y), np.max(x), np.max(y)))
    reference = _clip_score(clip_root / "tiny-clip", cropped, "a red cup")
    assert reference > 0, "a clamped score would compare nothing: pick another seed or caption"
    assert ours == pytest.approx(reference, abs=1e-3)
    uncropped = _clip_score(clip_root / "tiny-clip", edited_256, "a red cup")
    assert abs(uncropped - reference) > 1e-2, "the crop must matter for this check to mean anything"


def test_clip_image_similarity_of_identical_pictures_is_100(clip_root):
    picture = _noisy(7)
    out = edit_metrics(picture, picture, target=picture, models=load_metric_models([clip_root]))
    assert out["clip_image"] == pytest.approx(100.0, abs=1e-3)


def test_clip_is_unavailable_without_a_clip_folder(tmp_path):
    folder, why = find_clip_folder([tmp_path])
    assert folder is None and why.startswith("unavailable: a transformers CLIP folder")
    assert "clip-vit-large-patch14" in why


def test_clip_folder_without_tokenizer_is_unavailable_and_says_so(tmp_path):
    write_tiny_clip(tmp_path / "tiny-clip")
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / "tiny-clip" / name).unlink()
    folder, why = find_clip_folder([tmp_path])
    assert folder is None and "lacks tokenizer" in why


def test_lpips_is_unavailable_without_its_backbone_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    models = load_metric_models([])
    out = edit_metrics(_noisy(0), _noisy(1), target=_noisy(2), models=models)
    assert out["lpips"].startswith("unavailable: LPIPS needs")
    assert "squeezenet1_1-b8a52dc0.pth" in out["lpips"] or "torchvision" in out["lpips"]
