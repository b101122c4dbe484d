"""The attn2 replace patch of the image branch, and the tokens each guidance branch gets.

References: the decoupled cross-attention formula written with explicit softmaxes (IP-Adapter, arXiv
2308.06721; docs/kernels.md); ComfyUI's call contract for an attn2 replace patch
(``comfy/ldm/modules/attention.py``: q/k/v ``[B, L, H*D]``, ``extra_options`` with ``n_heads``,
``cond_or_uncond``, ``sigmas``, ``original_shape``); for unconditional tokens, tencent-ailab/IP-Adapter's
``get_image_embeds`` (zero image embeds through ``ImageProjModel``: Linear then LayerNorm).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as functional

from lmm_edit.loaders.ip_adapter import load_image_adapter
from lmm_edit.loaders.ip_adapter.image_branch_patch import (
    BACKEND_OPTION,
    ImageBranchPatch,
    ImageBranchSettings,
    next_branch_index,
)
from lmm_edit.loaders.ip_adapter.image_tokens import conditional_tokens, unconditional_tokens
from lmm_edit.selfcheck.ip_adapter_files import (
    TINY_CONTEXT_DIM,
    tiny_iaa_state,
    tiny_ip_adapter_state,
    write_adapter_file,
)

HEADS = 4  # layer 0 of the tiny SD1.5-layout adapter has 32 channels: 4 heads of 8
LATENT = (6, 4)  # latent h, w of the UNet call; layer 0 sees it at full size: Lq = 24
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    path = write_adapter_file(tiny_ip_adapter_state("basic", seed=3), tmp_path_factory.mktemp("a") / "ip.safetensors")
    return load_image_adapter(path)


def _attention(q, k, v):
    """Per-head softmax(q k^T / sqrt(D)) v on [B, L, H*D] tensors."""
    b, lq, width = q.shape
    d = width // HEADS
    split = lambda x: x.reshape(x.shape[0], x.shape[1], HEADS, d).transpose(1, 2)  # noqa: E731
    weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) / d**0.5, dim=-1)
    return (weights @ split(v)).transpose(1, 2).reshape(b, lq, width)


def _call(chunks=3, images=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = chunks * images
    width = 32
    q = torch.randn(rows, LATENT[0] * LATENT[1], width, generator=g)
    k, v = torch.randn(rows, 7, width, generator=g), torch.randn(rows, 7, width, generator=g)
    tokens = torch.randn(rows, 4, TINY_CONTEXT_DIM, generator=g)
    extra = {
        "n_heads": HEADS, "cond_or_uncond": list(range(chunks))[::-1], "sigmas": torch.full((rows,), 5.0),
        "original_shape": [rows, 8, *LATENT], "lmm_edit_image_tokens_0": tokens,
    }
    return q, k, v, extra


def _image_part(adapter, q, tokens, layer=0):
    return _attention(q, tokens @ adapter.to_k_ip[layer].T, tokens @ adapter.to_v_ip[layer].T)


class TextOnly:
    """Stands in for ComfyUI's attention; records that the patch fell back to it."""

    def __init__(self):
        self.calls = 0

    def __call__(self, q, k, v, extra):
        self.calls += 1
        return _attention(q, k, v)


def test_one_branch_adds_lambda_times_image_attention_over_the_rows_tokens(adapter):
    q, k, v, extra = _call()
    patch = ImageBranchPatch(0, [ImageBranchSettings("lmm_edit_image_tokens_0", adapter, (0.8,))])
    expected = _attention(q, k, v) + 0.8 * _image_part(adapter, q, extra["lmm_edit_image_tokens_0"])
    torch.testing.assert_close(patch(q, k, v, extra), expected, atol=TOLERANCE, rtol=TOLERANCE)


def test_per_image_weights_repeat_over_the_guidance_chunks(adapter):
    q, k, v, extra = _call(chunks=3, images=2)
    patch = ImageBranchPatch(0, [ImageBranchSettings("lmm_edit_image_tokens_0", adapter, (1.0, 0.25))])
    per_row = torch.tensor([1.0, 0.25] * 3).view(6, 1, 1)  # rows: chunk-major, latent batch inside each chunk
    expected = _attention(q, k, v) + per_row * _image_part(adapter, q, extra["lmm_edit_image_tokens_0"])
    torch.testing.assert_close(patch(q, k, v, extra), expected, atol=TOLERANCE, rtol=TOLERANCE)


def test_per_image_weights_for_another_batch_size_are_refused(adapter):
    q, k, v, extra = _call(chunks=3, images=2)
    patch = ImageBranchPatch(0, [ImageBranchSettings("lmm_edit_image_tokens_0", adapter, (1.0, 0.5, 0.2))])
    with pytest.raises(ValueError, match="3 per-image weights for a latent batch of 2"):
        patch(q, k, v, extra)


def test_mask_weights_each_query_row_by_the_mask_at_its_latent_position(adapter):
    q, k, v, extra = _call()
    mask = torch.zeros(1, 12, 8)
    mask[:, :, :4] = 1.0  # left half of the image; the layer's grid is the 6 x 4 latent
    patch = ImageBranchPatch(0, [ImageBranchSettings("lmm_edit_image_tokens_0", adapter, (1.0,), mask=mask)])
    rows = functional.interpolate(mask[:, None], size=LATENT, mode="bilinear").reshape(1, -1, 1)
    expected = _attention(q, k, v) + rows * _image_part(adapter, q, extra["lmm_edit_image_tokens_0"])
    out = patch(q, k, v, extra)
    torch.testing.assert_close(out, expected, atol=TOLERANCE, rtol=TOLERANCE)
    right_columns = torch.arange(24).remainder(4) >= 2
    torch.testing.assert_close(out[:, right_columns], _attention(q, k, v)[:, right_columns], atol=TOLERANCE, rtol=0)


def test_two_stacked_branches_add_up(adapter, tmp_path):
    other = load_image_adapter(write_adapter_file(tiny_ip_adapter_state("basic", seed=9), tmp_path / "b.safetensors"))
    q, k, v, extra = _call()
    extra["lmm_edit_image_tokens_1"] = torch.randn(3, 4, TINY_CONTEXT_DIM)
    first = ImageBranchPatch(0).with_branch(ImageBranchSettings("lmm_edit_image_tokens_0", adapter, (0.5,)))
    both = first.with_branch(ImageBranchSettings("lmm_edit_image_tokens_1", other, (0.7,)))
    expected = (_attention(q, k, v) + 0.5 * _image_part(adapter, q, extra["lmm_edit_image_tokens_0"])
                + 0.7 * _image_part(other, q, extra["lmm_edit_image_tokens_1"]))
    torch.testing.assert_close(both(q, k, v, extra), expected, atol=TOLERANCE, rtol=TOLERANCE)
    assert len(first.branches) == 1, "stacking must not change the upstream model's patch"
    assert next_branch_index([first]) == 1 and next_branch_index([both]) == 2 and next_branch_index([]) == 0


@pytest.mark.parametrize(
    "settings_change, extra_change",
    [
        ({"weights": (0.0,)}, {}),  # lambda 0
        ({"sigma_start": 4.0, "sigma_end": 1.0}, {}),  # sigma 5 is before the window
        ({"sigma_start": 14.0, "sigma_end": 6.0}, {}),  # ... and after it
        ({}, {"drop": "lmm_edit_image_tokens_0"}),  # the conditioning does not carry the tokens
    ],
)
def test_an_inactive_branch_leaves_the_hosts_text_attention(adapter, settings_change, extra_change):
    q, k, v, extra = _call()
    extra.pop(extra_change.get("drop", ""), None)
    text = TextOnly()
    settings = ImageBranchSettings(**{"token_key": "lmm_edit_image_tokens_0", "adapter": adapter, **settings_change})
    out = ImageBranchPatch(0, [settings], text)(q, k, v, extra)
    assert text.calls == 1
    torch.testing.assert_close(out, _attention(q, k, v), atol=0, rtol=0)


def test_inside_the_sigma_window_the_branch_acts(adapter):
    q, k, v, extra = _call()
    text = TextOnly()
    settings = ImageBranchSettings("lmm_edit_image_tokens_0", adapter, (1.0,), sigma_start=5.0, sigma_end=5.0)
    out = ImageBranchPatch(0, [settings], text)(q, k, v, extra)
    assert text.calls == 0
    assert (out - _attention(q, k, v)).abs().max() > 1e-2


def test_a_forced_backend_that_cannot_run_the_call_is_reported(adapter):
    q, k, v, extra = _call()
    extra[BACKEND_OPTION] = "triton"  # CPU tensors: the Triton backend refuses (or is not installed)
    patch = ImageBranchPatch(0, [ImageBranchSettings("lmm_edit_image_tokens_0", adapter)])
    with pytest.raises(RuntimeError, match="triton"):
        patch(q, k, v, extra)


def test_deepcopy_of_model_options_shares_the_adapter(adapter):
    patch = ImageBranchPatch(0, [ImageBranchSettings("lmm_edit_image_tokens_0", adapter)])
    copied = copy.deepcopy({"attn2": patch})["attn2"]
    assert copied is not patch and copied.branches[0].adapter is adapter


def _reference_image_proj(state, embeds):
    """tencent ImageProjModel: proj Linear -> reshape [N, D] -> LayerNorm, from the file's tensors."""
    proj = state["image_proj"]
    context = proj["norm.weight"].shape[0]
    tokens = (embeds @ proj["proj.weight"].T + proj["proj.bias"]).reshape(embeds.shape[0], -1, context)
    return functional.layer_norm(tokens, (context,), proj["norm.weight"], proj["norm.bias"])


def test_ip_adapter_tokens_for_two_images_form_one_prompt_and_uncond_projects_zero_embeds(adapter):
    state = tiny_ip_adapter_state("basic", seed=3)
    embeds = torch.randn(2, 24)
    cond = conditional_tokens(adapter, embeds)
    uncond = unconditional_tokens(adapter, 2)
    torch.testing.assert_close(cond, _reference_image_proj(state, embeds).reshape(1, 8, TINY_CONTEXT_DIM))
    torch.testing.assert_close(uncond, _reference_image_proj(state, torch.zeros(2, 24)).reshape(1, 8, TINY_CONTEXT_DIM))
    assert uncond.abs().max() > 0.1, "zero embeds project to non-zero tokens (bias and LayerNorm)"


def test_iaa_uncond_is_its_projection_of_a_zero_clip_embedding(tmp_path):
    state = tiny_iaa_state(num_tokens=4)
    iaa = load_image_adapter(write_adapter_file(state, tmp_path / "iaa.safetensors"))
    cond = conditional_tokens(iaa, torch.randn(32, 48))  # r = 32 [MM] states of a 48-wide LLM
    uncond = unconditional_tokens(iaa, 1)
    assert cond.shape == uncond.shape == (1, 4, TINY_CONTEXT_DIM)
    torch.testing.assert_close(uncond, _reference_image_proj(state, torch.zeros(1, 24)))


def test_plus_uncond_needs_the_blank_image_states(tmp_path):
    plus = load_image_adapter(write_adapter_file(tiny_ip_adapter_state("plus"), tmp_path / "plus.bin"))
    with pytest.raises(ValueError, match="blank image"):
        unconditional_tokens(plus, 1)
    blank = torch.randn(1, 257, 24)
    torch.testing.assert_close(unconditional_tokens(plus, 2, blank), plus.image_tokens(blank).repeat(1, 2, 1))


def test_a_source_of_the_wrong_width_names_the_clip_vision_to_use(adapter):
    with pytest.raises(ValueError, match=r"image_embeds \[images, 24\].*CLIP vision model it was trained with"):
        conditional_tokens(adapter, torch.randn(1, 1024))


def test_ipadapter_plus_adding_to_our_patch_gets_a_clear_refusal(adapter):
    patch = ImageBranchPatch(0, [ImageBranchSettings("lmm_edit_image_tokens_0", adapter)])
    with pytest.raises(RuntimeError, match="Use LMMEdit_IAAImageBranch"):
        patch.add(lambda *args, **kwargs: None, weight=1.0)  # IPAdapter_plus's Attn2Replace.add(callback, **kwargs)
