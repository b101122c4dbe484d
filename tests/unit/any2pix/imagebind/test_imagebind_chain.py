"""ImageBind chained from the fixture's raw PNG and WAV through `embed_images` / `embed_audios` (as a ComfyUI node
would call them: an IMAGE row and an AUDIO waveform), against `outputs/stage3_imagebind`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lmm_edit.loaders.any2pix.imagebind import comfy_audio_rows, embed_audios, embed_images

CHAIN_ATOL = 1e-4  # fixture README: ImageBind full trunks from the wav/png files


def test_image_embedding_from_the_raw_png(fixture, imagebind, max_err):
    ours = embed_images(imagebind, [Image.open(p) for p in fixture.images])
    err = max_err(ours, fixture.stage3["imagebind_output_vision"])
    print(f"\nembed_images(PNG) [N, D]: max abs err {err:.1e}")
    assert err <= CHAIN_ATOL


def test_image_embedding_from_a_comfy_image_row(fixture, imagebind, max_err):
    row = torch.from_numpy(np.asarray(Image.open(fixture.images[0]).convert("RGB")).astype(np.float32) / 255.0)
    ours = imagebind.embed_images([row])
    err = max_err(ours, fixture.stage3["imagebind_output_vision"])
    print(f"\nembed_images(IMAGE row) [1, D]: max abs err {err:.1e}")
    assert err <= CHAIN_ATOL


def test_audio_embedding_from_the_raw_wav(fixture, imagebind, max_err, read_wav):
    pytest.importorskip("torchaudio", reason="ImageBind's audio front end is torchaudio's resample + fbank")
    waveform, rate = read_wav(fixture.audios[0])
    audio = {"waveform": waveform[None], "sample_rate": rate}  # ComfyUI AUDIO
    ours = embed_audios(imagebind, comfy_audio_rows(audio))
    err = max_err(ours, fixture.stage3["imagebind_output_audio"])
    print(f"\nembed_audios(WAV) [1, D]: max abs err {err:.1e}")
    assert err <= CHAIN_ATOL
