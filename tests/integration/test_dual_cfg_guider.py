"""LMMEdit_DualCFGGuider in real ComfyUI: one batched UNet call, InstructPix2Pix's formula, composition.

The reference for the formula is ComfyUI's own DualCFGGuider wired as docs/comfyui.md (Sampling)
describes (cond1 = positive, cond2 = negative with image, negative = null text without image),
which was measured against diffusers' math; diffusers itself is compared in test_parity_diffusers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from .conftest import IP2P_CHECKPOINT, build_ip2p_graph

STEPS = 3


class UNetCallRecorder:
    """A UNet function wrapper that records the batch of every UNet call."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, apply_model, args):
        self.calls.append({"batch": args["input"].shape[0], "cond_or_uncond": list(args["cond_or_uncond"])})
        return apply_model(args["input"], args["timestep"], **args["c"])


@pytest.fixture(scope="module")
def graph(comfyui, ip2p_checkpoint, example_image):
    return build_ip2p_graph("make the sky red", example_image.name)


def _sample(guider, latent, seed=7, steps=STEPS, sampler_name="euler"):
    import comfy.sample
    import comfy.samplers

    samples = latent["samples"]
    noise = comfy.sample.prepare_noise(samples, seed)
    sigmas = comfy.samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), "normal", steps)
    sampler = comfy.samplers.sampler_object(sampler_name)
    return guider.sample(noise, samples, sampler, sigmas, disable_pbar=True, seed=seed)


def _recording_model(model):
    recorder = UNetCallRecorder()
    patched = model.clone()
    patched.set_model_unet_function_wrapper(recorder)
    return patched, recorder


def _our_guider(model, graph, text_cfg, image_cfg):
    from lmm_edit.nodes.guidance import build_guider

    return build_guider(model, graph["positive"], graph["negative"], text_cfg, image_cfg)


def test_all_three_branches_run_in_one_batched_unet_call_per_step(graph):
    model, recorder = _recording_model(graph["model"])
    _sample(_our_guider(model, graph, 7.5, 1.5), graph["latent"])
    assert len(recorder.calls) == STEPS
    assert all(call["batch"] == 3 for call in recorder.calls)
    assert all(sorted(call["cond_or_uncond"]) == [0, 1, 2] for call in recorder.calls)


@pytest.mark.parametrize("text_cfg, image_cfg, batch", [(7.5, 1.0, 2), (1.0, 1.0, 1), (1.0, 1.5, 3)])
def test_cfg_of_one_skips_the_branches_it_makes_redundant(graph, text_cfg, image_cfg, batch):
    model, recorder = _recording_model(graph["model"])
    _sample(_our_guider(model, graph, text_cfg, image_cfg), graph["latent"])
    assert [call["batch"] for call in recorder.calls] == [batch] * STEPS


@pytest.mark.parametrize("text_cfg, image_cfg", [(7.5, 1.5), (3.0, 1.0), (1.0, 1.0), (1.0, 2.0), (5.0, 0.5)])
def test_matches_core_dual_cfg_guider_wired_for_instructpix2pix(graph, text_cfg, image_cfg):
    from comfy_extras.nodes_custom_sampler import Guider_DualCFG

    core = Guider_DualCFG(graph["model"])
    core.set_conds(graph["positive"], graph["negative"], graph["null_text"])
    core.set_cfg(text_cfg, image_cfg)
    expected = _sample(core, graph["latent"])
    ours = _sample(_our_guider(graph["model"], graph, text_cfg, image_cfg), graph["latent"])
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_null_image_branch_has_no_source_image_but_keeps_everything_else(graph):
    from lmm_edit.nodes.guidance import without_source_image

    null = without_source_image(graph["negative"])
    assert "concat_latent_image" in graph["negative"][0][1]
    assert "concat_latent_image" not in null[0][1]
    assert null[0][0] is graph["negative"][0][0]
    assert {k for k in graph["negative"][0][1] if k != "concat_latent_image"} == set(null[0][1])


def test_pack_model_conds_reach_unet_patches_batched_in_branch_order(graph):
    """A model cond attached to both conditionings reaches transformer_options in all three branches."""
    from lmm_edit.nodes.model_conds import attach_model_cond, install_model_cond_router

    seen = []

    def input_patch(h, transformer_options):
        if transformer_options["block"] == ("input", 0):
            seen.append((transformer_options.get("lmm_edit_probe"), list(transformer_options["cond_or_uncond"])))
        return h

    model = graph["model"].clone()
    install_model_cond_router(model)
    model.set_model_input_block_patch(input_patch)
    positive = attach_model_cond(graph["positive"], "lmm_edit_probe", torch.tensor([[2.0]]))
    negative = attach_model_cond(graph["negative"], "lmm_edit_probe", torch.tensor([[1.0]]))
    from lmm_edit.nodes.guidance import build_guider

    _sample(build_guider(model, positive, negative, 7.5, 1.5), graph["latent"], steps=1)
    (probe, order), = seen
    assert probe.shape == (3, 1)
    # branch 2 = positive, 1 = middle (negative with image), 0 = null image (derived from negative)
    expected = {2: 2.0, 1: 1.0, 0: 1.0}
    assert probe[:, 0].tolist() == [expected[branch] for branch in order]


def test_router_leaves_the_unet_untouched_without_pack_conds(graph):
    from lmm_edit.nodes.model_conds import install_model_cond_router

    routed = graph["model"].clone()
    install_model_cond_router(routed)
    plain = _sample(_our_guider(graph["model"], graph, 7.5, 1.5), graph["latent"])
    with_router = _sample(_our_guider(routed, graph, 7.5, 1.5), graph["latent"])
    torch.testing.assert_close(with_router, plain, rtol=0, atol=0)


def test_controlnet_applied_with_core_node_composes_and_still_batches(comfyui, graph, tiny_controlnet):
    import nodes

    control_net = nodes.ControlNetLoader().load_controlnet(tiny_controlnet)[0]
    hint = torch.from_numpy(np.random.default_rng(3).random(graph["image"].shape, dtype=np.float32))
    positive, negative = nodes.ControlNetApplyAdvanced().apply_controlnet(
        graph["positive"], graph["negative"], control_net, hint, 1.0, 0.0, 1.0, vae=graph["vae"])
    controlled = dict(graph, positive=positive, negative=negative)

    model, recorder = _recording_model(graph["model"])
    with_control = _sample(_our_guider(model, controlled, 7.5, 1.5), graph["latent"])
    without = _sample(_our_guider(graph["model"], graph, 7.5, 1.5), graph["latent"])
    assert [call["batch"] for call in recorder.calls] == [3] * STEPS
    assert (with_control - without).abs().max() > 1e-3, "the ControlNet had no effect"

    # Reference: core's DualCFGGuider with the ControlNet on all three of its conditionings.
    from comfy_extras.nodes_custom_sampler import Guider_DualCFG

    null_text = nodes.ControlNetApplyAdvanced().apply_controlnet(
        graph["null_text"], graph["null_text"], control_net, hint, 1.0, 0.0, 1.0, vae=graph["vae"])[0]
    core = Guider_DualCFG(graph["model"])
    core.set_conds(positive, negative, null_text)
    core.set_cfg(7.5, 1.5)
    # Core cannot batch its null branch with the others here (it holds another ControlNet copy):
    # a different batch composition changes float rounding, hence the relative tolerance.
    torch.testing.assert_close(with_control, _sample(core, graph["latent"]), rtol=1e-4, atol=1e-4)


def _latents_of(comfyui, prompt: dict) -> dict[str, torch.Tensor]:
    """filename prefix -> the latent each SaveLatent node of the prompt wrote."""
    import pathlib

    from safetensors.torch import load_file

    comfyui.executor.reset()
    result = comfyui.run(prompt)
    assert result.success, result.error
    out = {}
    for saved in [item for ui in result.outputs.values() for item in ui.get("latents", [])]:
        folder = pathlib.Path(comfyui.folder_paths.get_directory_by_type(saved["type"])) / saved["subfolder"]
        out[saved["filename"].rsplit("_", 2)[0]] = load_file(str(folder / saved["filename"]))["latent_tensor"]
    return out


def test_one_node_sampler_equals_guider_with_sampler_custom_advanced(comfyui, ip2p_checkpoint, example_image):
    common = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": IP2P_CHECKPOINT}},
        "2": {"class_type": "LoadImage", "inputs": {"image": example_image.name}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "make the sky red"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "5": {"class_type": "InstructPixToPixConditioning",
              "inputs": {"positive": ["3", 0], "negative": ["4", 0], "vae": ["1", 2], "pixels": ["2", 0]}},
    }
    seed, steps = 5, 3
    custom = dict(common, **{
        "6": {"class_type": "LMMEdit_DualCFGGuider", "inputs": {"model": ["1", 0], "positive": ["5", 0],
              "negative": ["5", 1], "text_cfg": 7.5, "image_cfg": 1.5}},
        "7": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
        "8": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler_ancestral"}},
        "9": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "normal",
                                                          "steps": steps, "denoise": 1.0}},
        "10": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["7", 0], "guider": ["6", 0],
               "sampler": ["8", 0], "sigmas": ["9", 0], "latent_image": ["5", 2]}},
        "11": {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": "output"}},
        "12": {"class_type": "SaveLatent", "inputs": {"samples": ["10", 1], "filename_prefix": "denoised"}},
    })
    one_node = dict(common, **{
        "6": {"class_type": "LMMEdit_DualCFGSampler", "inputs": {
            "model": ["1", 0], "positive": ["5", 0], "negative": ["5", 1], "latent_image": ["5", 2],
            "seed": seed, "steps": steps, "text_cfg": 7.5, "image_cfg": 1.5, "sampler_name": "euler_ancestral",
            "scheduler": "normal", "denoise": 1.0}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "output"}},
        "8": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 1], "filename_prefix": "denoised"}},
    })
    ours, core = _latents_of(comfyui, one_node), _latents_of(comfyui, custom)
    assert sorted(ours) == sorted(core) == ["denoised", "output"]
    for name in ours:
        torch.testing.assert_close(ours[name], core[name], rtol=0, atol=0)
