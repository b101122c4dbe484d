"""ImageBind's audio preprocessing from an in-memory waveform (ComfyUI AUDIO rows), through torchaudio.

As facebookresearch/ImageBind @ 3fcf5c9039de97f6ff5528ee4a9dce903c5979b3 `imagebind/data.py`
`load_and_transform_audio_data` / `get_clip_timepoints` / `waveform2melspec`, with its defaults, on the waveform
`torchaudio.load` would return (float32 [channels, samples] in [-1, 1)):

1. resample to 16 kHz with `torchaudio.functional.resample` (its defaults: sinc, Hann window, width 6), all channels;
2. three 2 s clips from `pytorchvideo.data.clip_sampling.ConstantClipsPerVideoSampler(2, 3)`: clip i covers
   samples `[int(start_i * 16000), int((start_i + 2) * 16000))` with `start_i = i * spacing`, computed with
   `fractions.Fraction` from `max(duration - 2, 0)` as the sampler does. The spacing depends on the pytorchvideo
   version: PyPI's 0.1.5, the last release (January 2022), is what InstructAny2Pix installs (its requirements.txt
   names `pytorchvideo` unpinned and ImageBind is installed with `--no-deps`); it divides by the number of clips
   (`CLIP_SPACING_PYPI_0_1_5`, the default: the last `max_start / 3` seconds are never read). The commit
   ImageBind's requirements pin (facebookresearch/pytorchvideo 28fe037, after "Bug fix in Constant clip sampler"
   9368f30) divides by clips - 1 (`CLIP_SPACING_IMAGEBIND_PIN`: the last clip ends at the end of the audio).
   Audio shorter than 2 s gives three identical clips of the whole audio;
3. per clip, `waveform -= waveform.mean()` **in place** on a view of the shared resampled waveform, so
   overlapping clips see the offsets subtracted by earlier clips, the mean taken over all channels. Reproduced:
   Kaldi removes the DC offset per frame anyway, but the rounding of the shifted samples is visible in the log
   energies of near-silent mel bands (for an 8 kHz recording, whose bands above 4 kHz are empty after
   resampling, subtracting each clip's own mean instead moved clips 2 and 3 by up to 0.31 after normalisation);
4. `torchaudio.compliance.kaldi.fbank(htk_compat=True, sample_frequency=16000, use_energy=False,
   window_type="hanning", num_mel_bins=128, dither=0.0, frame_length=25, frame_shift=10)`, which reads the
   first channel only (`channel=-1` -> 0): [frames, 128] -> [128, frames], zero-padded or cut to 204 frames
   (a 2 s clip gives 198);
5. `(fbank - (-4.268)) / 9.138` (torchvision `Normalize` with ImageBind's audio mean/std) -> [1, 128, 204].

Output [3, 1, 128, 204] fp32 per waveform. The fbank runs in fp32, as in the reference.
"""

from __future__ import annotations

import importlib
import importlib.util
from fractions import Fraction
from types import ModuleType

import torch

SAMPLE_RATE = 16000  # load_and_transform_audio_data(sample_rate=16000)
CLIP_SECONDS = 2  # load_and_transform_audio_data(clip_duration=2)
CLIPS_PER_AUDIO = 3  # load_and_transform_audio_data(clips_per_video=3)
MEL_BINS = 128  # load_and_transform_audio_data(num_mel_bins=128)
TARGET_FRAMES = 204  # load_and_transform_audio_data(target_length=204)
FBANK_MEAN = -4.268  # load_and_transform_audio_data(mean=-4.268)
FBANK_STD = 9.138  # load_and_transform_audio_data(std=9.138)
FRAME_LENGTH_MS = 25  # waveform2melspec(frame_length=25)
FRAME_SHIFT_MS = 10  # imagebind/data.py DEFAULT_AUDIO_FRAME_SHIFT_MS
MIN_SAMPLES = SAMPLE_RATE * FRAME_LENGTH_MS // 1000  # Kaldi needs one full 25 ms window (400 samples at 16 kHz)

CLIP_SPACING_PYPI_0_1_5 = "pytorchvideo-0.1.5"  # spacing = max_start / clips (InstructAny2Pix's environment)
CLIP_SPACING_IMAGEBIND_PIN = "pytorchvideo-28fe037"  # spacing = max_start / (clips - 1) (ImageBind's pin)
CLIP_SPACINGS = (CLIP_SPACING_PYPI_0_1_5, CLIP_SPACING_IMAGEBIND_PIN)


def require_torchaudio() -> ModuleType:
    """torchaudio (ComfyUI's requirements install it); a clear message where it is missing."""
    if importlib.util.find_spec("torchaudio") is None:
        raise ModuleNotFoundError(
            "ImageBind's audio front end needs torchaudio (torchaudio.functional.resample and "
            "torchaudio.compliance.kaldi.fbank); install the build matching your torch: pip install torchaudio"
        )
    importlib.import_module("torchaudio.compliance.kaldi")
    importlib.import_module("torchaudio.functional")
    return importlib.import_module("torchaudio")


def clip_bounds(num_samples: int, spacing: str = CLIP_SPACING_PYPI_0_1_5) -> list[tuple[int, int]]:
    """Sample ranges [start, end) of the clips of a 16 kHz waveform, as `get_clip_timepoints` computes them."""
    if spacing not in CLIP_SPACINGS:
        raise ValueError(f"clip spacing {spacing!r}: expected one of {CLIP_SPACINGS}")
    duration = num_samples / SAMPLE_RATE  # a float, as `waveform.size(1) / sample_rate` in the reference
    max_start = Fraction(max(duration - CLIP_SECONDS, 0))
    divisor = CLIPS_PER_AUDIO if spacing == CLIP_SPACING_PYPI_0_1_5 else max(CLIPS_PER_AUDIO - 1, 1)
    step = Fraction(max_start, divisor)
    bounds = []
    for i in range(CLIPS_PER_AUDIO):
        start = step * i
        bounds.append((int(start * SAMPLE_RATE), int((start + CLIP_SECONDS) * SAMPLE_RATE)))
    return bounds


def _as_channels_first(waveform: torch.Tensor) -> torch.Tensor:
    if waveform.ndim == 1:
        waveform = waveform.unsqueeze(0)
    if waveform.ndim != 2 or waveform.shape[0] == 0:
        raise ValueError(
            f"expected one waveform as [channels, samples] (a row of a ComfyUI AUDIO waveform [B, C, S]); "
            f"got shape {tuple(waveform.shape)}"
        )
    return waveform.detach().to("cpu", torch.float32)


def fbank_clip(clip: torch.Tensor) -> torch.Tensor:
    """One clip [channels, samples] at 16 kHz (its mean already subtracted) -> normalised fbank [1, 128, 204]."""
    torchaudio = require_torchaudio()
    fbank = torchaudio.compliance.kaldi.fbank(
        clip, htk_compat=True, sample_frequency=SAMPLE_RATE, use_energy=False, window_type="hanning",
        num_mel_bins=MEL_BINS, dither=0.0, frame_length=FRAME_LENGTH_MS, frame_shift=FRAME_SHIFT_MS,
    ).transpose(0, 1)  # [128, frames]
    pad = TARGET_FRAMES - fbank.shape[1]
    fbank = torch.nn.functional.pad(fbank, (0, pad)) if pad > 0 else fbank[:, :TARGET_FRAMES]
    return ((fbank - FBANK_MEAN) / FBANK_STD).unsqueeze(0)


def audio_input(
    waveform: torch.Tensor, sample_rate: int, spacing: str = CLIP_SPACING_PYPI_0_1_5
) -> torch.Tensor:
    """waveform [channels, samples] (or [samples]) at `sample_rate` -> ImageBind's clips [3, 1, 128, 204] fp32."""
    torchaudio = require_torchaudio()
    waveform = _as_channels_first(waveform)
    sample_rate = int(sample_rate)
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive; got {sample_rate}")
    if sample_rate != SAMPLE_RATE:
        waveform = torchaudio.functional.resample(waveform, orig_freq=sample_rate, new_freq=SAMPLE_RATE)
    else:
        waveform = waveform.clone()  # the mean subtraction below writes into it
    if waveform.shape[1] < MIN_SAMPLES:
        raise ValueError(
            f"the audio is {waveform.shape[1] / SAMPLE_RATE * 1000:.1f} ms long at 16 kHz; ImageBind's fbank needs "
            f"at least {FRAME_LENGTH_MS} ms. Use a longer clip."
        )
    clips = []
    for start, end in clip_bounds(waveform.shape[1], spacing):
        clip = waveform[:, start:end]  # a view: the in-place subtraction is seen by overlapping clips (step 3)
        clip -= clip.mean()
        clips.append(fbank_clip(clip))
    return torch.stack(clips)
