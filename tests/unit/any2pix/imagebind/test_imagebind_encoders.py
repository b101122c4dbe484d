"""ImageBind's vision and audio encoders fed the reference's stored inputs, against `outputs/stage3_imagebind`.

Stored inputs: the vision input is the fixture's 224 x 224 PNG (the reference tensor before Normalize, exact),
normalised with CLIP's mean/std; the audio input is `inputs.safetensors:imagebind_input_audio`.
"""

from __future__ import annotations

import torch

from lmm_edit.loaders.any2pix.imagebind_vision_input import CLIP_MEAN, CLIP_STD

TRUNK_ATOL = 1e-4  # fixture README: ImageBind full trunks, fp32
POST_ATOL = 1e-5  # fixture README: stage 3 post-processing


def _stored_vision_input(fixture) -> torch.Tensor:
    pixels = torch.from_numpy(fixture.vision_input_pixels().copy()).permute(2, 0, 1).float().div(255)
    return ((pixels - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1))[None]


def _renormalise(x: torch.Tensor) -> torch.Tensor:
    """jacklishufan/InstructAny2Pix pipeline.py forward_llm: aux_info / (||aux_info|| + 1e-9) * 20."""
    return x / (x.norm(dim=-1, keepdim=True) + 1e-9) * 20


def test_vision_head_matches_the_reference(fixture, imagebind, max_err):
    with torch.no_grad():
        head = imagebind.vision.head(_stored_vision_input(fixture))
    err = max_err(head, fixture.stage3["imagebind_vision_head"])
    print(f"\nvision head [1, D]: max abs err {err:.1e}")
    assert err <= TRUNK_ATOL


def test_vision_output_is_the_l2_normalised_head(fixture, imagebind, max_err):
    with torch.no_grad():
        out = imagebind.vision(_stored_vision_input(fixture))
    err = max_err(out, fixture.stage3["imagebind_output_vision"])
    print(f"\nvision output (norm {float(out.norm()):.6f}): max abs err {err:.1e}")
    assert err <= TRUNK_ATOL


def test_audio_head_per_clip_matches_the_reference(fixture, imagebind, max_err):
    clips = fixture.audio_input[0]  # [3, 1, mel, frames]
    with torch.no_grad():
        head = imagebind.audio.head(clips)
    err = max_err(head, fixture.stage3["imagebind_audio_per_clip_head"])
    print(f"\naudio head per clip [3, D]: max abs err {err:.1e}")
    assert err <= TRUNK_ATOL


def test_audio_postprocessing_is_normalise_times_20_per_clip(fixture, imagebind, max_err):
    post = imagebind.audio.postprocess(fixture.stage3["imagebind_audio_per_clip_head"])
    err = max_err(post, fixture.stage3["imagebind_audio_per_clip_postprocessed"])
    print(f"\naudio post-processing from the stored heads: max abs err {err:.1e}")
    assert err <= POST_ATOL


def test_audio_output_is_the_mean_over_clips(fixture, imagebind, max_err):
    with torch.no_grad():
        out = imagebind.audio(fixture.audio_input)
    err = max_err(out, fixture.stage3["imagebind_output_audio"])
    print(f"\naudio output (norm {float(out.norm()):.4f}): max abs err {err:.1e}")
    assert err <= TRUNK_ATOL


def test_renormalised_outputs_are_the_llm_inputs(fixture, imagebind, max_err):
    """Each of our outputs, renormalised as the pipeline does, is one row of `extra_replacement_data`."""
    with torch.no_grad():
        ours = torch.cat([imagebind.vision(_stored_vision_input(fixture)), imagebind.audio(fixture.audio_input)])
    rows = fixture.stage3["extra_replacement_data"]
    errs = [min(max_err(_renormalise(x), row) for row in rows) for x in ours]
    print(f"\nrenormalised vision / audio vs extra_replacement_data rows: max abs err {max(errs):.1e}")
    assert max(errs) <= TRUNK_ATOL
