"""Every ComfyUI internal the pack relies on where the versioned V3 API (``comfy_api.v0_0_2``) has nothing public.

ComfyUI can change these between releases without notice; tests/integration/test_comfy_internals.py checks
each one against the ComfyUI in COMFYUI_PATH and fails naming the one that moved. comfy_extras classes are
imported only here; the comfy core names below are used where listed.

| internal | used in | what the pack relies on |
|---|---|---|
| ``comfy_extras.nodes_custom_sampler.Guider_DualCFG`` | guidance.py | subclassed: ``set_conds(positive, middle, negative)``, ``set_cfg(cfg1, cfg2, nested)``, attributes ``cfg1``/``cfg2`` |
| ``comfy_extras.nodes_custom_sampler.SamplerCustomAdvanced`` | guidance.py | ``sample(noise, guider, sampler, sigmas, latent_image) -> (output, denoised_output)`` |
| ``comfy_extras.nodes_custom_sampler.Noise_RandomNoise`` | guidance.py | ``Noise_RandomNoise(seed)``, the NOISE of core's RandomNoise node |
| ``comfy.ldm.modules.attention.optimized_attention`` | image_branch_install.py | ``(q, k, v, heads, attn_precision=, transformer_options=)``: the unpatched attn2 |
| ``ModelPatcher.set_model_attn2_replace`` / ``set_model_input_block_patch`` | image_branch_install.py, bim_residual.py | attn2 replace patches get ``(q, k, v, extra_options)``; input-block patches ``(h, transformer_options)`` |
| ``comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL`` | model_conds.py | the wrapper receives model conds as keyword arguments |
| ``comfy.conds.CONDRegular`` in ``"model_conds"`` | model_conds.py | kept through cond conversion and concatenated across the guidance branches |
| ``comfy.sd.load_diffusion_model_state_dict``, ``comfy.model_base.SD15_instructpix2pix`` | smartedit_loader.py | LDM keys -> an 8-channel IP2P MODEL |
"""

from __future__ import annotations

from comfy_extras.nodes_custom_sampler import Guider_DualCFG, Noise_RandomNoise, SamplerCustomAdvanced

__all__ = ["Guider_DualCFG", "Noise_RandomNoise", "SamplerCustomAdvanced", "sample_custom_advanced"]


def sample_custom_advanced(noise, guider, sampler, sigmas, latent: dict) -> tuple[dict, dict]:
    """Core's SamplerCustomAdvanced on these inputs: (output, denoised_output) LATENTs, previews and progress bar."""
    execute = getattr(SamplerCustomAdvanced, "execute", None)
    if execute is not None:  # a V3 node (ComfyUI releases after 0.3.64)
        return tuple(execute(noise, guider, sampler, sigmas, latent))
    return SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, latent)
