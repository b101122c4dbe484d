"""The pack's model modules built from ComfyUI's ops, under a ModelPatcher, compute what torch.nn builds compute.

loaders/ builds its layers through an ``operations`` namespace (loaders/operations.py); the loader nodes pass
``comfy.ops.disable_weight_init``. Each module here is built twice from the same random weights, once with
``torch.nn`` and once with a comfy.ops class, the latter wrapped in a ModelPatcher and loaded by ComfyUI's
model management, and both run on the same input.
"""

from __future__ import annotations

import pytest
import torch

from lmm_edit.loaders.ip_adapter.iaa import IAAConfig, ImageAlignmentAdapter
from lmm_edit.loaders.ip_adapter.image_projection import ImageProjConfig, Resampler, ResamplerConfig
from lmm_edit.loaders.llama import LlamaConfig, LlamaLM
from lmm_edit.loaders.smartedit.bim import BIM, BIMConfig
from lmm_edit.loaders.smartedit.conditioning import run_bim
from lmm_edit.loaders.smartedit.qformer import QFormer, QFormerConfig
from lmm_edit.loaders.smartedit.vision import ClipVisionConfig, ClipVisionTower

g = torch.Generator().manual_seed(0)


def _llama(ops):
    return LlamaLM(LlamaConfig(hidden=32, layers=2, heads=4, intermediate=64, vocab=50), operations=ops)


def _run_llama(module):
    return module.logits(module(torch.randn(1, 6, 32, generator=g), module.new_cache(batch=1, capacity=8)))


MODULES = {
    "llama": (_llama, _run_llama),
    "clip_tower": (
        lambda ops: ClipVisionTower(ClipVisionConfig(32, 3, 4, 64, patch=4, image_size=16), operations=ops),
        lambda m: m(torch.randn(1, 3, 16, 16, generator=g)),
    ),
    "qformer": (
        lambda ops: QFormer(QFormerConfig(32, 2, 4, 64, encoder_width=24, num_queries=5, cross_layers=(0,)),
                            operations=ops),
        lambda m: m(torch.randn(1, 7, 24, generator=g)),
    ),
    "bim": (
        lambda ops: BIM(BIMConfig(embed=32, text=16, depth=2, mlp=64, internal=16, unet_channels=8), operations=ops),
        lambda m: run_bim(m, torch.randn(1, 5, 16, generator=g), torch.randn(1, 16, 32, generator=g), (6, 6)).keys,
    ),
    "resampler": (
        lambda ops: Resampler(ResamplerConfig(24, 64, 32, 4, 2, 128, 96), operations=ops),
        lambda m: m(torch.randn(2, 9, 24, generator=g)),
    ),
    "iaa": (
        lambda ops: ImageAlignmentAdapter(IAAConfig((20, 28, 12), ImageProjConfig(12, 16, 4)), operations=ops),
        lambda m: m(torch.randn(6, 20, generator=g)),
    ),
}


@pytest.mark.parametrize("ops_name", ["disable_weight_init", "manual_cast"])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_built_with_comfy_ops_under_a_model_patcher_matches_torch_nn(comfyui, name, ops_name):
    import comfy.model_management
    import comfy.model_patcher
    import comfy.ops

    build, run = MODULES[name]
    ops = getattr(comfy.ops, ops_name)
    torch.manual_seed(1)
    reference = build(torch.nn).eval()
    for parameter in reference.parameters():  # comfy.ops skips initialisation: give both modules real weights
        parameter.data.normal_(0.0, 0.2, generator=g)
    ours = build(ops).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert any(isinstance(layer, ops.Linear) for layer in ours.modules())
    patcher = comfy.model_patcher.ModelPatcher(ours, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    comfy.model_management.load_models_gpu([patcher], force_full_load=True)

    state = g.get_state()
    with torch.inference_mode():
        expected = run(reference)
        g.set_state(state)
        got = run(patcher.model)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
