"""LPIPS in the batch metrics, with a backbone file already in torch's hub cache (never downloaded).

torchmetrics' LPIPS takes its backbone from torchvision, which ComfyUI's requirements bring: these
tests run in ComfyUI's environment (the ``comfyui`` fixture), as the batch command does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lmm_edit.cli.batch.metric_models import LPIPS_BACKBONE_FILE, load_metric_models
from lmm_edit.cli.batch.metrics import edit_metrics


@pytest.fixture
def cached_backbone(comfyui, tmp_path, monkeypatch):
    """A seeded random squeezenet1_1 under torchvision's file name in a private TORCH_HOME."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    path = tmp_path / "hub" / "checkpoints" / LPIPS_BACKBONE_FILE
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), path)
    return path


def _picture(seed, size=(72, 96)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


def test_lpips_of_identical_pictures_is_zero(cached_backbone):
    picture = _picture(0)
    out = edit_metrics(picture, picture, target=picture, models=load_metric_models([]))
    assert out["lpips"] == pytest.approx(0.0, abs=1e-6)


def test_background_lpips_follows_smartedit_reference_procedure(cached_backbone):
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    original, edited = _picture(1), _picture(2)
    mask = np.zeros((72, 96), np.uint8)
    mask[10:50, 20:70] = 255
    ours = edit_metrics(edited, original, mask=Image.fromarray(mask), models=load_metric_models([]))["lpips_outside"]
    # metrics_evaluation.py: 256 x 256 bicubic, mask nearest, (1 - mask / 255) on both, LPIPS('squeeze') of x*2-1
    keep = 1 - np.asarray(Image.fromarray(mask).resize((256, 256), Image.Resampling.NEAREST), np.int64) / 255
    keep = keep[:, :, None].repeat(3, axis=2).astype(np.float32)

    def prepared(picture):
        array = np.array(picture.resize((256, 256), Image.Resampling.BICUBIC)).astype(np.float32) / 255 * keep
        return torch.tensor(array).permute(2, 0, 1).unsqueeze(0)

    reference = LearnedPerceptualImagePatchSimilarity(net_type="squeeze")(prepared(original) * 2 - 1,
                                                                          prepared(edited) * 2 - 1)
    assert ours == pytest.approx(float(reference), rel=1e-5)
    assert ours > 0
