"""Real ComfyUI in this process (COMFYUI_PATH), with LMM Edit loaded as a custom node.

Every test here uses the session fixture ``comfyui``; without COMFYUI_PATH they are skipped
with one line saying so.
"""

from __future__ import annotations

import os
import pathlib

import pytest

IP2P_CHECKPOINT = "instruct-pix2pix-00-22000.safetensors"  # the name the example workflow uses
SDXL_CHECKPOINT = "sd_xl_base_1.0.safetensors"  # stabilityai/stable-diffusion-xl-base-1.0's single file
EXAMPLE_IMAGE = "example.png"  # the LoadImage default in the example workflows
IMAGE_SIZE = (64, 48)  # width, height: non-square on purpose, a multiple of 16


def _comfyui_path() -> str | None:
    path = os.environ.get("COMFYUI_PATH")
    return path if path else None


@pytest.fixture(scope="session")
def comfyui(tmp_path_factory):
    path = _comfyui_path()
    if path is None:
        pytest.skip("COMFYUI_PATH is unset: integration tests need a ComfyUI checkout (see README, Tests)")
    from lmm_edit.cli.comfy_session import ComfySession, missing_comfyui_requirements, requirements_hint

    missing = missing_comfyui_requirements()
    if missing:
        pytest.fail(requirements_hint(path, missing), pytrace=False)
    work = tmp_path_factory.mktemp("comfyui")
    models = work / "models"
    (models / "checkpoints").mkdir(parents=True)
    (models / "controlnet").mkdir(parents=True)
    session = ComfySession(
        path, output_dir=work / "output", input_dir=work / "input", temp_dir=work / "temp", models_dir=models,
        model_folders={"checkpoints": [str(models / "checkpoints")], "controlnet": [str(models / "controlnet")]},
        cpu=True, force_fp32=True,
    )
    assert session.pack_loaded, "LMM Edit failed to load as a custom node (see the log above)"
    session.models_path = models
    return session


@pytest.fixture(scope="session")
def tiny_ip2p():
    from lmm_edit.selfcheck.ip2p_models import build_tiny_ip2p

    return build_tiny_ip2p(seed=0)


@pytest.fixture(scope="session")
def ip2p_checkpoint(comfyui, tiny_ip2p) -> pathlib.Path:
    """The tiny IP2P model as a single-file LDM checkpoint, converted with ComfyUI's own key maps."""
    import comfy.diffusers_convert
    import comfy.utils

    from lmm_edit.selfcheck.ip2p_models import TINY_UNET_LDM_CONFIG, write_ldm_checkpoint

    path = comfyui.models_path / "checkpoints" / IP2P_CHECKPOINT
    if not path.exists():
        write_ldm_checkpoint(tiny_ip2p, path, comfy.utils.unet_to_diffusers(dict(TINY_UNET_LDM_CONFIG)),
                             comfy.diffusers_convert.convert_vae_state_dict)
    return path


@pytest.fixture(scope="session")
def sdxl_checkpoint(comfyui) -> pathlib.Path:
    """A tiny random SDXL-family checkpoint (selfcheck/sdxl_models.py; ~1.9 GB: real-size text encoders), once."""
    from lmm_edit.selfcheck.sdxl_models import write_tiny_sdxl_checkpoint

    return write_tiny_sdxl_checkpoint(comfyui.models_path / "checkpoints" / SDXL_CHECKPOINT)


@pytest.fixture(scope="session")
def example_image(comfyui) -> pathlib.Path:
    """A smooth, non-square RGB test image in ComfyUI's input folder."""
    from lmm_edit.selfcheck.images import write_test_image

    return write_test_image(pathlib.Path(comfyui.folder_paths.get_input_directory()) / EXAMPLE_IMAGE, *IMAGE_SIZE)


CONTROLNET_FILE = "tiny_controlnet.safetensors"


@pytest.fixture(scope="session")
def tiny_controlnet(comfyui, ip2p_checkpoint) -> str:
    """A ControlNet for the tiny UNet in the original `control_model.*` layout, random but seeded.

    Built from ComfyUI's own ControlNet class with the config ComfyUI detects from the tiny
    UNet, so ControlNetLoader reads it back with no missing key.
    """
    import comfy.cldm.cldm
    import comfy.model_detection
    import comfy.ops
    import torch
    from safetensors.torch import load_file, save_file

    from lmm_edit.selfcheck.ip2p_models import randomise_

    path = comfyui.models_path / "controlnet" / CONTROLNET_FILE
    if not path.exists():
        prefix = "model.diffusion_model."
        unet_sd = {k[len(prefix):]: v for k, v in load_file(str(ip2p_checkpoint)).items() if k.startswith(prefix)}
        config = dict(comfy.model_detection.model_config_from_unet(unet_sd, "").unet_config)
        config.pop("out_channels")
        config.update(in_channels=4, hint_channels=3, operations=comfy.ops.disable_weight_init, dtype=torch.float32)
        control = comfy.cldm.cldm.ControlNet(**config)
        randomise_(control, torch.Generator().manual_seed(1))
        save_file({f"control_model.{k}": v.contiguous() for k, v in control.state_dict().items()}, str(path))
    return CONTROLNET_FILE


def build_ip2p_graph(instruction: str, image_name: str) -> dict:
    """Checkpoint, text conditionings and InstructPixToPixConditioning outputs, built by the real core nodes."""
    from comfy_extras.nodes_ip2p import InstructPixToPixConditioning

    import nodes

    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(IP2P_CHECKPOINT)[:3]
    image = nodes.LoadImage().load_image(image_name)[0]
    text = nodes.CLIPTextEncode().encode(clip, instruction)[0]
    null_text = nodes.CLIPTextEncode().encode(clip, "")[0]
    positive, negative, latent = InstructPixToPixConditioning.execute(text, null_text, image, vae).result
    return dict(model=model, clip=clip, vae=vae, image=image, text=text, null_text=null_text,
                positive=positive, negative=negative, latent=latent)
