from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny_ip2p_folder(tmp_path_factory):
    """The tiny InstructPix2Pix model (SD1.5 CLIP and VAE sizes) saved as a diffusers folder."""
    from lmm_edit.selfcheck.ip2p_models import build_tiny_ip2p, write_diffusers_folder

    return write_diffusers_folder(build_tiny_ip2p(seed=0), tmp_path_factory.mktemp("ip2p") / "diffusers")


@pytest.fixture(scope="session")
def tiny_ip2p_pipeline(tiny_ip2p_folder):
    from diffusers import StableDiffusionInstructPix2PixPipeline

    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
        tiny_ip2p_folder, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    return pipe, image
