"""Our IP-Adapter image projections equal diffusers' on the same released-layout weights.

Reference: diffusers' ``UNet2DConditionModel._convert_ip_adapter_image_proj_to_diffusers`` (its own
key conversion from the release layout) building ``ImageProjection`` (base) and
``IPAdapterPlusImageProjection`` (Plus Resampler).
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.embeddings import ImageProjection, IPAdapterPlusImageProjection

from lmm_edit.loaders.ip_adapter.image_projection import ImageProjConfig, ImageProjModel, Resampler, ResamplerConfig
from lmm_edit.selfcheck.ip_adapter_files import TINY_SD15_UNET_CONFIG, tiny_ip_adapter_state

FP32_TOLERANCE = 1e-5


def _diffusers_projection(image_proj_state):
    unet = UNet2DConditionModel(**TINY_SD15_UNET_CONFIG)
    return unet._convert_ip_adapter_image_proj_to_diffusers(image_proj_state, low_cpu_mem_usage=False).eval()


def _ours(model_type, image_proj_state):
    config_type = {ImageProjModel: ImageProjConfig, Resampler: ResamplerConfig}[model_type]
    module = model_type(config_type.from_shapes({k: tuple(v.shape) for k, v in image_proj_state.items()}))
    module.load_state_dict(image_proj_state, strict=True)
    return module.eval()


def test_basic_projection_gives_four_tokens_equal_to_diffusers_image_projection():
    image_proj = tiny_ip_adapter_state("basic", clip_dim=24)["image_proj"]
    reference = _diffusers_projection(image_proj)
    assert isinstance(reference, ImageProjection)
    image_embeds = torch.randn(3, 24, generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        ours = _ours(ImageProjModel, image_proj)(image_embeds)
        expected = reference(image_embeds)

    assert ours.shape == (3, 4, 32)
    torch.testing.assert_close(ours, expected, atol=FP32_TOLERANCE, rtol=FP32_TOLERANCE)


def test_plus_resampler_gives_sixteen_tokens_equal_to_diffusers_plus_projection():
    image_proj = tiny_ip_adapter_state("plus", clip_dim=24)["image_proj"]
    reference = _diffusers_projection(image_proj)
    assert isinstance(reference, IPAdapterPlusImageProjection)
    hidden_states = torch.randn(2, 257, 24, generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        ours = _ours(Resampler, image_proj)(hidden_states)
        expected = reference(hidden_states)

    assert ours.shape == (2, 16, 32)
    torch.testing.assert_close(ours, expected, atol=FP32_TOLERANCE, rtol=FP32_TOLERANCE)


def test_resampler_sizes_are_read_from_the_tensors():
    image_proj = tiny_ip_adapter_state("plus", clip_dim=24)["image_proj"]
    config = ResamplerConfig.from_shapes({k: tuple(v.shape) for k, v in image_proj.items()})
    assert config == ResamplerConfig(
        embedding_dim=24, dim=32, output_dim=32, num_queries=16, depth=4, inner_dim=64, ff_dim=128,
    )
