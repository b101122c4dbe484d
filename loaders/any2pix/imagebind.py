"""ImageBind-huge's vision and audio encoders for InstructAny2Pix: loading, and embedding pictures and sounds.

InstructAny2Pix (jacklishufan/InstructAny2Pix @ d11e49be50f0dde117ce99b58f6b7aab5dc9bddf,
`instructany2pix/pipeline.py` `forward_llm`) embeds every image with
`model_imb({"vision": load_and_transform_vision_data([path])})["vision"]` and every audio with
`model_imb({"audio": load_and_transform_audio_data([path])})["audio"]`, ImageBind-huge in fp32 on CPU, then
renormalises each to norm 20 (`x / (||x|| + 1e-9) * 20`; that step is the pipeline's, not done here).

Numerics relied on (facebookresearch/ImageBind @ 3fcf5c9039de97f6ff5528ee4a9dce903c5979b3; details in the module
docstrings of imagebind_vision_input.py, imagebind_audio_input.py, imagebind_encoders.py, imagebind_trunk.py):
- vision input: PIL bicubic resize of the short side to 224, center crop 224, /255, CLIP mean/std;
- audio input: resample to 16 kHz, three 2 s clips (pytorchvideo 0.1.5 spacing by default), Kaldi fbank
  (128 mel, 25 ms / 10 ms, Hann, no dither) in fp32, 204 frames, (x + 4.268) / 9.138;
- encoders: ViT-style pre-norm trunks with exact GELU and LayerNorm eps 1e-6 (audio stem norm 1e-5);
  vision stem = the image repeated to 2 frames + Conv3d; audio trunk with `bias_k`/`bias_v`;
- outputs: vision L2-normalised (norm 1); audio normalised x 20 per clip, then the mean of the 3 clips.
  The post-processing runs in fp32 and the embeddings are returned in fp32 whatever the encoder dtype.

Batching: the reference embeds one input at a time; here all images (all clips of all audios) go through the
trunk as one batch, which changes only the summation order inside the matmuls.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from ..errors import ModelFileError
from ..operations import DEFAULT_OPERATIONS
from .imagebind_audio_input import CLIP_SPACING_PYPI_0_1_5, audio_input
from .imagebind_encoders import AUDIO_LOGIT_SCALE, ImageBindAudioEncoder, ImageBindVisionEncoder
from .imagebind_file import (
    ImageBindConfig,
    encoder_state,
    read_constructor_args,
    read_encoder_tensors,
    release_key,
)
from .imagebind_vision_input import ImageLike, vision_input

Waveform = tuple[torch.Tensor, int]  # ([channels, samples], sample rate)


class ImageBind(nn.Module):
    """ImageBind's vision and audio encoders, in one dtype on one device (`.to(...)` moves both)."""

    def __init__(self, config: ImageBindConfig, operations: ModuleType = DEFAULT_OPERATIONS) -> None:
        super().__init__()
        self.config = config
        self.vision = ImageBindVisionEncoder(config.vision, operations)
        self.audio = ImageBindAudioEncoder(config.audio, operations)

    @property
    def dtype(self) -> torch.dtype:
        return self.vision.head_proj.weight.dtype

    @property
    def device(self) -> torch.device:
        """Where the inputs go: where ComfyUI's ModelPatcher loaded the model (under partial loading some layers
        stay offloaded and are cast per call), else where the weights are."""
        placed = self.__dict__.get("_placed")
        return placed if isinstance(placed, torch.device) else self.vision.head_proj.weight.device

    @device.setter
    def device(self, value) -> None:
        """ComfyUI's ModelPatcher writes `model.device` after loading or offloading a model."""
        self.__dict__["_placed"] = torch.device(value) if value is not None else None

    def embed_images(self, images: Sequence[ImageLike]) -> torch.Tensor:
        return embed_images(self, images)

    def embed_audios(self, audios: Sequence[Waveform], spacing: str = CLIP_SPACING_PYPI_0_1_5) -> torch.Tensor:
        return embed_audios(self, audios, spacing)


@torch.no_grad()
def embed_images(model: ImageBind, images: Sequence[ImageLike]) -> torch.Tensor:
    """PIL images or ComfyUI IMAGE rows [H, W, C] -> ImageBind's vision outputs [N, D] (norm 1, fp32, on the
    model's device)."""
    pixels = vision_input(images).to(device=model.device, dtype=model.dtype)
    return model.vision(pixels)


@torch.no_grad()
def embed_audios(
    model: ImageBind, audios: Sequence[Waveform], spacing: str = CLIP_SPACING_PYPI_0_1_5
) -> torch.Tensor:
    """(waveform [channels, samples], sample rate) pairs -> ImageBind's audio outputs [N, D] (the mean of the
    three clip embeddings, each of norm 20; fp32, on the model's device)."""
    if len(audios) == 0:
        raise ValueError("no audio to embed")
    clips = torch.stack([audio_input(waveform, rate, spacing) for waveform, rate in audios])  # [N, 3, 1, 128, 204]
    return model.audio(clips.to(device=model.device, dtype=model.dtype))


def comfy_audio_rows(audio: Mapping[str, object]) -> list[Waveform]:
    """A ComfyUI AUDIO `{"waveform": [B, C, S], "sample_rate": int}` -> one (waveform [C, S], rate) per row."""
    waveform, rate = audio["waveform"], audio["sample_rate"]
    if not isinstance(waveform, torch.Tensor) or waveform.ndim != 3:
        found = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
        raise ValueError(f"expected an AUDIO waveform [batch, channels, samples]; got {found}")
    return [(row, int(rate)) for row in waveform]


def load_imagebind(
    path: str | Path,
    *,
    kwargs_file: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    operations: ModuleType = DEFAULT_OPERATIONS,
) -> ImageBind:
    """ImageBind's vision and audio encoders from `imagebind_huge.pth` (or a file with its keys), in eval mode.

    `kwargs_file`: an optional JSON of `ImageBindModel` constructor arguments, for what the shapes cannot tell
    (head counts, audio stride); by default `imagebind_kwargs.json` next to the weights if present, else
    imagebind_huge's. Raises `ModelFileError` naming the file, what was expected and found, and the fix.
    """
    path = Path(path)
    tensors = read_encoder_tensors(path, dtype)
    args, args_file = read_constructor_args(path, None if kwargs_file is None else Path(kwargs_file))
    config = ImageBindConfig.from_shapes({k: tuple(v.shape) for k, v in tensors.items()}, args, path, args_file)
    with torch.device("meta"):
        model = ImageBind(config, operations)
    for modality, encoder in (("vision", model.vision), ("audio", model.audio)):
        state, origin = encoder_state(tensors, modality)
        if modality == "audio" and "log_logit_scale" not in state:
            # a frozen buffer, log(20) as ImageBind stores it; absent only from files re-saved without buffers
            state["log_logit_scale"] = torch.tensor(math.log(AUDIO_LOGIT_SCALE), dtype=torch.float32)
        _check_state(path, modality, encoder, state, origin)
        encoder.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False).to(device)


def _check_state(
    path: Path, modality: str, encoder: nn.Module, state: Mapping[str, torch.Tensor], origin: Mapping[str, str]
) -> None:
    """Names the first missing, unknown or misshapen tensors (by their names in the file) before torch's strict
    load would fail less clearly."""
    expected = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    missing = [release_key(modality, k) for k in expected if k not in state]
    unknown = [origin.get(k, k) for k in state if k not in expected]
    wrong = [f"{origin.get(k, k)} {tuple(state[k].shape)} (expected {s})" for k, s in expected.items()
             if k in state and tuple(state[k].shape) != s]
    floating = {k for k, v in encoder.state_dict().items() if v.is_floating_point()}
    wrong += [f"{origin.get(k, k)} of dtype {state[k].dtype} (expected floating-point weights)"
              for k in expected if k in state and k in floating and not state[k].is_floating_point()]
    if missing or unknown or wrong:
        found = "; ".join(part for part in (
            f"none of {missing[:3]}" if missing else "",
            f"tensors ImageBind's {modality} encoder does not have: {unknown[:3]}" if unknown else "",
            f"other shapes or dtypes: {wrong[:3]}" if wrong else "",
        ) if part)
        raise ModelFileError(
            path, f"the {modality} encoder of ImageBindModel (facebookresearch/ImageBind @ 3fcf5c9)", found,
            "use ImageBind-huge's release file imagebind_huge.pth, or a file saved from that ImageBindModel",
        )
