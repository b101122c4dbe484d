"""ImageBind's audio front end (imagebind/data.py load_and_transform_audio_data) from an in-memory waveform.

Reference: the fixture's `imagebind_input_audio`, computed by ImageBind's own code from `inputs/audio*.wav`
(resample 8 -> 16 kHz, clip sampling, Kaldi fbank in fp32, normalisation). Needs torchaudio (ComfyUI installs it).
"""

from __future__ import annotations

import pytest
import torch

torchaudio = pytest.importorskip("torchaudio", reason="ImageBind's audio front end is torchaudio's resample + fbank")

from lmm_edit.loaders.any2pix.imagebind import comfy_audio_rows  # noqa: E402
from lmm_edit.loaders.any2pix.imagebind_audio_input import (  # noqa: E402
    CLIP_SPACING_IMAGEBIND_PIN,
    CLIP_SPACING_PYPI_0_1_5,
    SAMPLE_RATE,
    audio_input,
    clip_bounds,
)

FBANK_ATOL = 1e-4  # fixture README: ImageBind from the wav, fbank computed in fp32


def test_audio_features_from_the_wav_match_the_reference(fixture, read_wav, max_err):
    waveform, rate = read_wav(fixture.audios[0])
    ours = audio_input(waveform, rate)
    err = max_err(ours[None], fixture.audio_input)
    print(f"\n{fixture.audios[0].name} ({rate} Hz) -> {tuple(ours.shape)}: max abs err {err:.1e}")
    assert err <= FBANK_ATOL


def test_audio_already_at_16khz_is_not_resampled_again(fixture, read_wav, max_err):
    waveform, rate = read_wav(fixture.audios[0])
    at_16k = torchaudio.functional.resample(waveform, orig_freq=rate, new_freq=SAMPLE_RATE)
    err = max_err(audio_input(at_16k, SAMPLE_RATE)[None], fixture.audio_input)
    print(f"\n16 kHz input: max abs err {err:.1e}")
    assert err <= FBANK_ATOL


def _reference_transcription(waveform: torch.Tensor, sr: int) -> torch.Tensor:
    """facebookresearch/ImageBind @ 3fcf5c9 imagebind/data.py load_and_transform_audio_data, line for line, on a
    waveform instead of a path, with pytorchvideo 0.1.5's ConstantClipsPerVideoSampler(2, 3) (step max_start / 3)."""
    from fractions import Fraction

    if sr != 16000:
        waveform = torchaudio.functional.resample(waveform, orig_freq=sr, new_freq=16000)
    else:
        waveform = waveform.clone()
    duration = waveform.size(1) / 16000
    max_start = Fraction(max(duration - Fraction(2), 0))
    clips = []
    for index in range(3):
        start = Fraction(max_start, 3) * index
        clip = waveform[:, int(start * 16000) : int((start + Fraction(2)) * 16000)]
        clip -= clip.mean()
        fbank = torchaudio.compliance.kaldi.fbank(
            clip, htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
            num_mel_bins=128, dither=0.0, frame_length=25, frame_shift=10,
        ).transpose(0, 1)
        p = 204 - fbank.size(1)
        fbank = torch.nn.functional.pad(fbank, (0, p), mode="constant", value=0) if p > 0 else fbank[:, 0:204]
        clips.append((fbank.unsqueeze(0) - (-4.268)) / 9.138)
    return torch.stack(clips)


@pytest.mark.parametrize(
    ("channels", "rate", "seconds"), [(2, 44100, 3.3), (1, 22050, 1.2), (3, 16000, 7.0), (1, 48000, 2.0)]
)
def test_any_rate_length_and_channel_count_follow_the_reference_code(channels, rate, seconds, max_err):
    """Stereo: the clip mean is taken over all channels, the fbank reads channel 0 (torchaudio's channel=-1)."""
    g = torch.Generator().manual_seed(channels * rate)
    t = torch.arange(int(rate * seconds)) / rate
    waveform = 0.3 * torch.sin(2 * torch.pi * 440 * t) * torch.exp(-t) + 0.05 * torch.randn(channels, t.numel(), generator=g)
    waveform = waveform + torch.arange(channels)[:, None] * 0.1  # a different DC offset per channel
    err = max_err(audio_input(waveform, rate), _reference_transcription(waveform.float(), rate))
    print(f"\n{channels} ch, {rate} Hz, {seconds} s: max abs err vs the reference code {err:.1e}")
    assert err <= FBANK_ATOL


def test_reference_clip_starts_are_pypi_pytorchvideo_0_1_5(fixture, read_wav, max_err):
    """The other spacing (ImageBind's pinned pytorchvideo) gives other clips for audio longer than 2 s."""
    waveform, rate = read_wav(fixture.audios[0])
    other = audio_input(waveform, rate, spacing=CLIP_SPACING_IMAGEBIND_PIN)
    err = max_err(other[None], fixture.audio_input)
    print(f"\nImageBind-pin spacing vs the fixture: max abs err {err:.2f} (clip 0 identical: "
          f"{max_err(other[0], fixture.audio_input[0, 0]):.1e})")
    assert max_err(other[0], fixture.audio_input[0, 0]) <= FBANK_ATOL
    assert err > 0.1


def test_clip_bounds_of_both_samplers():
    # ConstantClipsPerVideoSampler(2, 3) on 2.5 s: max start 0.5 s; 0.1.5 steps 0.5/3, the pinned commit 0.5/2
    assert clip_bounds(40000, CLIP_SPACING_PYPI_0_1_5) == [(0, 32000), (2666, 34666), (5333, 37333)]
    assert clip_bounds(40000, CLIP_SPACING_IMAGEBIND_PIN) == [(0, 32000), (4000, 36000), (8000, 40000)]
    assert clip_bounds(16000) == [(0, 32000)] * 3  # shorter than 2 s: three clips of the whole audio


def test_comfy_audio_batch_gives_one_waveform_per_row(fixture, read_wav):
    waveform, rate = read_wav(fixture.audios[0])
    rows = comfy_audio_rows({"waveform": torch.stack([waveform, waveform]), "sample_rate": rate})
    assert len(rows) == 2 and all(torch.equal(w, waveform) and r == rate for w, r in rows)


def test_audio_shorter_than_one_fbank_window_is_refused():
    with pytest.raises(ValueError, match="at least 25 ms"):
        audio_input(torch.zeros(1, 100), 16000)
