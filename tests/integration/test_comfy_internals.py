"""The ComfyUI internals nodes/comfy_internals.py lists are still there, with the shapes the pack relies on.

Fails naming the internal that moved, so a ComfyUI update that breaks the pack is caught here, not mid-workflow.
"""

from __future__ import annotations

import inspect

import pytest


def _parameters(function) -> list[str]:
    return [name for name in inspect.signature(function).parameters if name not in ("self", "cls")]


def test_the_v3_api_is_imported_from_the_versioned_module(comfyui):
    import comfy_api.v0_0_2 as pinned

    assert hasattr(pinned, "io") and hasattr(pinned, "ComfyExtension"), "comfy_api.v0_0_2 no longer exports io"
    for name in ("ComfyNode", "Schema", "NodeOutput", "Custom", "Hidden"):
        assert hasattr(pinned.io, name), f"comfy_api.v0_0_2.io.{name} is gone"


def test_guider_dual_cfg_keeps_the_methods_the_instruct_pix2pix_guider_overrides_and_calls(comfyui):
    import comfy.samplers

    from lmm_edit.nodes.comfy_internals import Guider_DualCFG

    assert issubclass(Guider_DualCFG, comfy.samplers.CFGGuider)
    assert _parameters(Guider_DualCFG.set_conds) == ["positive", "middle", "negative"]
    assert _parameters(Guider_DualCFG.set_cfg)[:3] == ["cfg1", "cfg2", "nested"]


def test_sampler_custom_advanced_returns_output_and_denoised_output(comfyui):
    from lmm_edit.nodes.comfy_internals import Noise_RandomNoise, SamplerCustomAdvanced

    if hasattr(SamplerCustomAdvanced, "execute"):
        outputs = [o.display_name for o in SamplerCustomAdvanced.define_schema().outputs]
        function = SamplerCustomAdvanced.execute
    else:
        outputs = list(SamplerCustomAdvanced.RETURN_NAMES)
        function = SamplerCustomAdvanced.sample
    assert outputs == ["output", "denoised_output"]
    assert _parameters(function) == ["noise", "guider", "sampler", "sigmas", "latent_image"]
    assert Noise_RandomNoise(3).seed == 3 and callable(Noise_RandomNoise(3).generate_noise)


@pytest.mark.parametrize("owner, name, parameters", [
    ("comfy.model_patcher.ModelPatcher", "set_model_attn2_replace", ["patch", "block_name", "number"]),
    ("comfy.model_patcher.ModelPatcher", "set_model_input_block_patch", ["patch"]),
    ("comfy.model_patcher.ModelPatcher", "add_wrapper_with_key", ["wrapper_type", "key", "wrapper"]),
    ("comfy.sd", "load_diffusion_model_state_dict", ["sd", "model_options"]),
])
def test_core_functions_keep_their_parameters(comfyui, owner, name, parameters):
    import importlib

    module_name, _, class_name = owner.partition(".ModelPatcher")
    target = importlib.import_module(module_name)
    if owner.endswith(".ModelPatcher"):
        target = target.ModelPatcher
    function = getattr(target, name, None)
    assert function is not None, f"{owner}.{name} is gone"
    assert _parameters(function)[: len(parameters)] == parameters, f"{owner}.{name} changed its parameters"


def test_core_classes_and_constants_exist(comfyui):
    import comfy.conds
    import comfy.model_base
    import comfy.patcher_extension

    assert hasattr(comfy.patcher_extension.WrappersMP, "DIFFUSION_MODEL")
    assert hasattr(comfy.conds, "CONDRegular")
    assert hasattr(comfy.model_base, "SD15_instructpix2pix")


def test_optimized_attention_takes_the_keywords_the_image_branch_passes(comfyui):
    import comfy.ldm.modules.attention

    parameters = inspect.signature(comfy.ldm.modules.attention.optimized_attention).parameters
    positional = [p for p in parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(positional) >= 4  # q, k, v, heads, passed by position
    assert "attn_precision" in parameters
    assert "transformer_options" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())
