"""Our ComfyUI graph reproduces diffusers' StableDiffusionInstructPix2PixPipeline step by step.

Same tiny weights (the LDM checkpoint ComfyUI loads and the diffusers folder come from one
set of tensors), same initial noise, a deterministic Euler sampler on the same sigmas:
ComfyUI's "simple" schedule equals diffusers' Euler with "trailing" spacing. ComfyUI starts
a full denoise from noise * sqrt(1 + sigma_max^2), diffusers from latents * sigma_max, so
diffusers gets the noise pre-scaled by sqrt(1 + sigma_max^2) / sigma_max. ComfyUI's latents
leave the sampler unscaled (VAE space): diffusers' latents = ours * scaling_factor.

The graph is the example's: CheckpointLoaderSimple -> CLIPTextEncode -> InstructPixToPixConditioning
-> LMMEdit_DualCFGGuider -> SamplerCustomAdvanced (-> SaveLatent to read the result back).
"""

from __future__ import annotations

import pathlib

import pytest
import torch
from PIL import Image

from .conftest import EXAMPLE_IMAGE, IP2P_CHECKPOINT

STEPS = 8  # divides 1000: "simple" and "trailing" then pick the same timesteps (6 would give 833 vs 832)
SEED = 11
INSTRUCTION = "make the sky red"
TOLERANCE = 1e-4  # max |ours - diffusers| / max |diffusers|, fp32 on CPU


def _relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


@pytest.fixture(scope="module")
def pipeline(tiny_ip2p, comfyui, tmp_path_factory):
    from diffusers import EulerDiscreteScheduler, StableDiffusionInstructPix2PixPipeline

    from lmm_edit.selfcheck.ip2p_models import write_diffusers_folder

    tokenizer = pathlib.Path(comfyui.comfyui_path) / "comfy" / "sd1_tokenizer"
    folder = write_diffusers_folder(tiny_ip2p, tmp_path_factory.mktemp("diffusers") / "ip2p", tokenizer)
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(folder, safety_checker=None,
                                                                 requires_safety_checker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def text_conds(comfyui, ip2p_checkpoint):
    import nodes

    clip = nodes.CheckpointLoaderSimple().load_checkpoint(IP2P_CHECKPOINT)[1]
    return {text: nodes.CLIPTextEncode().encode(clip, text)[0][0][0] for text in (INSTRUCTION, "")}


def _api_graph(text_cfg: float, image_cfg: float) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": IP2P_CHECKPOINT}},
        "2": {"class_type": "LoadImage", "inputs": {"image": EXAMPLE_IMAGE}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": INSTRUCTION}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "5": {"class_type": "InstructPixToPixConditioning",
              "inputs": {"positive": ["3", 0], "negative": ["4", 0], "vae": ["1", 2], "pixels": ["2", 0]}},
        "6": {"class_type": "LMMEdit_DualCFGGuider", "inputs": {"model": ["1", 0], "positive": ["5", 0],
              "negative": ["5", 1], "text_cfg": text_cfg, "image_cfg": image_cfg}},
        "7": {"class_type": "RandomNoise", "inputs": {"noise_seed": SEED}},
        "8": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "9": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "simple",
                                                          "steps": STEPS, "denoise": 1.0}},
        "10": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["7", 0], "guider": ["6", 0],
               "sampler": ["8", 0], "sigmas": ["9", 0], "latent_image": ["5", 2]}},
        "11": {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": "parity"}},
    }


def _run_comfyui(comfyui, monkeypatch, text_cfg, image_cfg):
    """Final latent (VAE space) and the guided eps of every step, read from the real graph."""
    from comfy_extras.nodes_custom_sampler import Guider_DualCFG
    from safetensors.torch import load_file

    eps_per_step = []
    predict = Guider_DualCFG.predict_noise

    def recording_predict(self, x, timestep, model_options={}, seed=None):  # noqa: B006  (core's signature)
        denoised = predict(self, x, timestep, model_options, seed)
        eps_per_step.append(((x - denoised) / timestep.reshape(-1, 1, 1, 1)).clone())
        return denoised

    monkeypatch.setattr(Guider_DualCFG, "predict_noise", recording_predict)
    comfyui.executor.reset()
    result = comfyui.run(_api_graph(text_cfg, image_cfg))
    assert result.success, result.error
    (saved,) = [item for ui in result.outputs.values() for item in ui.get("latents", [])]
    folder = pathlib.Path(comfyui.folder_paths.get_directory_by_type(saved["type"])) / saved["subfolder"]
    latent = load_file(str(folder / saved["filename"]))["latent_tensor"]
    return latent, eps_per_step


def _run_diffusers(pipeline, text_conds, text_cfg, image_cfg, latent_shape):
    import comfy.sample

    noise = comfy.sample.prepare_noise(torch.zeros(latent_shape), SEED)
    pipeline.scheduler.set_timesteps(STEPS)
    sigma_max = pipeline.scheduler.sigmas.max()
    eps_per_step = []
    step = pipeline.scheduler.step

    def recording_step(model_output, timestep, sample, *args, **kwargs):
        eps_per_step.append(model_output.clone())
        return step(model_output, timestep, sample, *args, **kwargs)

    pipeline.scheduler.step = recording_step
    try:
        image = Image.open(pathlib.Path(EXAMPLE_IMAGE_DIR[0]) / EXAMPLE_IMAGE).convert("RGB")
        latents = pipeline(
            image=image, prompt_embeds=text_conds[INSTRUCTION], negative_prompt_embeds=text_conds[""],
            num_inference_steps=STEPS, guidance_scale=text_cfg, image_guidance_scale=image_cfg,
            latents=noise * (1 + sigma_max**2) ** 0.5 / sigma_max, output_type="latent",
        ).images
    finally:
        del pipeline.scheduler.step
    return latents, eps_per_step


EXAMPLE_IMAGE_DIR: list[str] = []


@pytest.fixture(autouse=True)
def _image_dir(comfyui, example_image):
    EXAMPLE_IMAGE_DIR[:] = [str(example_image.parent)]


def _without_the_diffusers_guidance_switch(monkeypatch):
    """diffusers turns all guidance off when image_guidance_scale < 1 (or text scale <= 1); we do not."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    monkeypatch.setattr(StableDiffusionInstructPix2PixPipeline, "do_classifier_free_guidance", property(lambda self: True))


def test_comfyui_text_conditioning_equals_diffusers_text_encoder(pipeline, text_conds):
    ids = pipeline.tokenizer(INSTRUCTION, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        reference = pipeline.text_encoder(ids)[0]
    assert _relative_error(text_conds[INSTRUCTION], reference) < TOLERANCE


@pytest.mark.parametrize("text_cfg, image_cfg", [(7.5, 1.5), (3.0, 1.0), (1.0, 1.0), (1.0, 2.0), (7.5, 0.5)])
def test_graph_reproduces_diffusers_noise_predictions_and_final_latent(comfyui, pipeline, text_conds, monkeypatch,
                                                                       text_cfg, image_cfg):
    _without_the_diffusers_guidance_switch(monkeypatch)
    latent, eps = _run_comfyui(comfyui, monkeypatch, text_cfg, image_cfg)
    reference_latent, reference_eps = _run_diffusers(pipeline, text_conds, text_cfg, image_cfg, latent.shape)
    assert len(eps) == len(reference_eps) == STEPS
    eps_errors = [_relative_error(ours, ref) for ours, ref in zip(eps, reference_eps)]
    latent_error = _relative_error(latent * pipeline.vae.config.scaling_factor, reference_latent)
    print(f"parity text {text_cfg} image {image_cfg}: eps max {max(eps_errors):.1e}, latent {latent_error:.1e}")
    for step, error in enumerate(eps_errors):
        assert error < TOLERANCE, f"noise prediction of step {step}"
    assert latent_error < TOLERANCE


def test_image_scale_below_one_is_applied_not_switched_off_as_in_diffusers(comfyui, pipeline, text_conds, monkeypatch):
    latent, _ = _run_comfyui(comfyui, monkeypatch, 7.5, 0.5)
    switched_off, _ = _run_diffusers(pipeline, text_conds, 7.5, 0.5, latent.shape)
    scale = pipeline.vae.config.scaling_factor
    assert _relative_error(latent * scale, switched_off) > 100 * TOLERANCE
