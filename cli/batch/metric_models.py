"""The models behind CLIP and LPIPS scores, taken from files already on disk; nothing is downloaded.

CLIP: a transformers CLIP folder with both towers in one of ComfyUI's ``clip_vision`` folders, e.g.
``models/clip_vision/clip-vit-large-patch14/`` holding openai/clip-vit-large-patch14 as published
(config.json with text_config and vision_config, the weights, tokenizer and preprocessor files) -
the model torchmetrics' CLIPScore and SmartEdit's evaluation use.
LPIPS: torchmetrics ships the LPIPS heads but its backbone comes from torchvision's ImageNet weights,
which it would download on first use; they are used only when already in torch's hub cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
from collections.abc import Iterable

import torch

from .metrics import MetricModels

PREFERRED_CLIP = "clip-vit-large-patch14"  # torchmetrics' CLIPScore default, SmartEdit's evaluation model
LPIPS_NET = "squeeze"  # metrics_evaluation.py: LearnedPerceptualImagePatchSimilarity(net_type='squeeze')
TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.json",))
PREPROCESSOR_FILE = "preprocessor_config.json"
# torchvision/models/squeezenet.py: SqueezeNet1_1_Weights.IMAGENET1K_V1 url's file name, kept by torch.hub
LPIPS_BACKBONE_FILE = "squeezenet1_1-b8a52dc0.pth"


def is_clip_folder(folder: pathlib.Path) -> bool:
    """A transformers CLIPModel folder: config.json with both a text and a vision config."""
    config = folder / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "text_config" in data and "vision_config" in data


def find_clip_folder(roots: Iterable[str | os.PathLike], name: str | None = None) -> tuple[pathlib.Path | None, str]:
    """(folder, "") or (None, why not). ``name``: a sub-folder name; else the preferred one, else the first."""
    roots = [pathlib.Path(root) for root in roots]
    found = sorted((sub for root in roots if root.is_dir() for sub in root.iterdir()
                    if sub.is_dir() and is_clip_folder(sub)), key=lambda sub: sub.name)
    if name is not None:
        found = [sub for sub in found if sub.name == name]
    else:
        found.sort(key=lambda sub: sub.name != PREFERRED_CLIP)  # stable: preferred first, then by name
    if not found:
        wanted = f"a folder {name!r}" if name else "a transformers CLIP folder (both towers)"
        return None, (f"unavailable: {wanted} not found in {', '.join(map(str, roots)) or 'no clip_vision folder'}; "
                      f"put openai/clip-vit-large-patch14 (all its files) in clip_vision/{PREFERRED_CLIP}/")
    folder = found[0]
    missing = [] if any(all((folder / f).is_file() for f in group) for group in TOKENIZER_FILES) else ["tokenizer"]
    if not (folder / PREPROCESSOR_FILE).is_file():
        missing.append(PREPROCESSOR_FILE)
    if missing:
        return None, f"unavailable: {folder} lacks {' and '.join(missing)} (copy them from the model's release)"
    return folder, ""


def lpips_backbone_file() -> pathlib.Path:
    """Where torch.hub keeps the squeezenet1_1 ImageNet weights that LPIPS('squeeze') loads through torchvision."""
    return pathlib.Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE_FILE


class _LPIPS:
    """torchmetrics' LPIPS module, one pair at a time."""

    def __init__(self, device: torch.device) -> None:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        self.metric = LearnedPerceptualImagePatchSimilarity(net_type=LPIPS_NET).to(device)
        self.device = device

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        value = self.metric(pred.to(self.device), target.to(self.device))
        self.metric.reset()
        return value


class _TensorFeatures:
    """A CLIPModel whose get_image_features/get_text_features return the projected embeddings as tensors.

    transformers >= 5 returns a BaseModelOutputWithPooling (embeddings in pooler_output), which torchmetrics
    <= 1.9's clip_score cannot read (Lightning-AI/torchmetrics issue 3407, fixed by pull request 3408).
    """

    def __init__(self, model) -> None:
        self.model, self.config = model, model.config

    def to(self, device):
        self.model.to(device)
        return self

    @staticmethod
    def _tensor(features):
        return features if isinstance(features, torch.Tensor) else features.pooler_output

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return self._tensor(self.model.get_text_features(*args, **kwargs))


def load_metric_models(clip_roots: Iterable[str | os.PathLike], clip_name: str | None = None,
                       device: torch.device | None = None) -> MetricModels:
    """CLIP from the first matching clip_vision folder, LPIPS when its backbone file is cached."""
    device = device or torch.device("cpu")
    models = MetricModels(device=device)
    backbone = lpips_backbone_file()
    if importlib.util.find_spec("torchvision") is None:
        models.lpips_missing = "unavailable: LPIPS needs torchvision (in ComfyUI's requirements)"
    elif backbone.is_file():
        models.lpips = _LPIPS(device)
    else:
        models.lpips_missing = (f"unavailable: LPIPS needs torchvision's squeezenet1_1 weights at {backbone} "
                                f"(not downloaded at run time: put the file {backbone.name} there)")
    folder, why = find_clip_folder(clip_roots, clip_name)
    if folder is None:
        models.clip_missing = why
    else:
        from transformers import CLIPModel, CLIPProcessor

        model = _TensorFeatures(CLIPModel.from_pretrained(str(folder), local_files_only=True).eval().to(device))
        processor = CLIPProcessor.from_pretrained(str(folder), local_files_only=True)
        models.clip = lambda: (model, processor)
        models.clip_name = folder.name
    return models
