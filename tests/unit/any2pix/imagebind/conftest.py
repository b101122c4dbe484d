"""Shared fixtures of the ImageBind tests: the InstructAny2Pix parity fixture produced by the reference code.

The fixture folder comes from LMM_EDIT_ANY2PIX_FIXTURE, default `<repo>/../shared/fixtures/any2pix_parity`.
Paths, sizes and inputs are read from its files: the weights `checkpoints/ckpts/imagebind_huge.pth`, the
constructor arguments `checkpoints/imagebind*_kwargs.json` (absent: imagebind_huge's), the raw inputs
`inputs/image*.png` / `inputs/audio*.wav`, the stored ImageBind input tensors and `outputs/stage3_imagebind`.
"""

from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[4]
FIXTURE = Path(os.environ.get("LMM_EDIT_ANY2PIX_FIXTURE", REPO.parent / "shared" / "fixtures" / "any2pix_parity"))
VISION_INPUT_PNG = "imagebind_vision_input_224.png"  # the fixture's 224 x 224 vision input before Normalize


def read_wav(path: Path) -> tuple[torch.Tensor, int]:
    """16-bit PCM WAV -> ([channels, samples] float32 in [-1, 1), rate), as torchaudio.load returns it."""
    with wave.open(str(path), "rb") as handle:
        if handle.getsampwidth() != 2:
            raise AssertionError(f"{path}: the fixture's WAVs are 16-bit PCM")
        channels, rate = handle.getnchannels(), handle.getframerate()
        frames = handle.readframes(handle.getnframes())
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    return torch.from_numpy(samples.reshape(-1, channels).T.copy()), rate


def max_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.detach().float().cpu(), ref.detach().float().cpu()
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float((ours - ref).abs().max())


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max|ours - ref| / max|ref|."""
    return max_err(ours, ref) / float(ref.detach().float().abs().max().clamp_min(1e-30))


class ImageBindFixture:
    def __init__(self, root: Path) -> None:
        self.root = root
        checkpoints = root / "checkpoints"
        self.weights = checkpoints / "ckpts" / "imagebind_huge.pth"
        kwargs = sorted(checkpoints.glob("imagebind*_kwargs.json"))
        self.kwargs_file = kwargs[0] if kwargs else None
        inputs = root / "inputs"
        self.images = sorted(p for p in inputs.glob("image*.png") if p.name != VISION_INPUT_PNG)
        self.audios = sorted(inputs.glob("audio*.wav"))
        self.vision_input_png = inputs / VISION_INPUT_PNG
        self.inputs = load_file(inputs / "inputs.safetensors")
        self.stage3 = load_file(root / "outputs" / "stage3_imagebind.safetensors")

    @property
    def audio_input(self) -> torch.Tensor:
        """[1, 3, 1, mel, frames]: load_and_transform_audio_data of the fixture's WAV."""
        return self.inputs["imagebind_input_audio"]

    def vision_input_pixels(self) -> np.ndarray:
        """[224, 224, 3] uint8: the reference's vision input before Normalize."""
        return np.asarray(Image.open(self.vision_input_png).convert("RGB"))


@pytest.fixture(scope="session", name="max_err")
def max_err_fixture():
    return max_err


@pytest.fixture(scope="session", name="rel_err")
def rel_err_fixture():
    return rel_err


@pytest.fixture(scope="session", name="read_wav")
def read_wav_fixture():
    return read_wav


@pytest.fixture(scope="session")
def fixture() -> ImageBindFixture:
    if not (FIXTURE / "README.md").is_file():
        pytest.skip(f"InstructAny2Pix parity fixture not found at {FIXTURE} (set LMM_EDIT_ANY2PIX_FIXTURE)")
    return ImageBindFixture(FIXTURE)


@pytest.fixture(scope="session")
def weights_as_safetensors(fixture, tmp_path_factory) -> Path:
    """The fixture's .pth re-saved as .safetensors with the same keys."""
    state = torch.load(fixture.weights, map_location="cpu", weights_only=True)
    path = tmp_path_factory.mktemp("imagebind") / "imagebind_huge.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.fixture(scope="session", params=["pth", "safetensors"])
def imagebind(request, fixture, weights_as_safetensors):
    """The fixture's weights through the same loader as the release file, fp32 on CPU."""
    from lmm_edit.loaders.any2pix.imagebind import load_imagebind

    path = fixture.weights if request.param == "pth" else weights_as_safetensors
    return load_imagebind(path, kwargs_file=fixture.kwargs_file)
