"""README's first command end to end: `python -m lmm_edit edit` boots real ComfyUI in a fresh process.

Without real weights it must say what to download and where, then run the example workflow on
tiny random weights and save the picture (the self-check).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from pack_process import run_with_pack


def _edit(comfyui, tmp_path, *args):
    env = dict(os.environ, COMFYUI_PATH=str(comfyui.comfyui_path))
    return run_with_pack("from lmm_edit.__main__ import main; sys.exit(main(sys.argv[1:]))",
                         "edit", "--output", str(tmp_path), *args, cwd=tmp_path, env=env)


@pytest.mark.parametrize("workflow, names", [
    ("instructpix2pix", ["instruct-pix2pix-00-22000.safetensors"]),
    ("smartedit", ["SmartEdit-7B", "LLaVA-7B-v1", "clip-vit-large-patch14/model.safetensors",
                   "instruct-pix2pix-00-22000.safetensors"]),
])
def test_edit_without_weights_names_the_downloads_then_self_checks(comfyui, tmp_path, workflow, names):
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(image)
    done = _edit(comfyui, tmp_path, "--workflow", workflow, "--image", str(image), "--steps", "2",
                 "--instruction", "make it red")
    assert done.returncode == 0, done.stderr[-3000:]
    for name in names:
        assert name in done.stdout, f"the message does not name {name}"
    assert done.stdout.count("put it in: ") == len(names)
    assert "SELF-CHECK PASSED" in done.stdout
    (saved,) = [line.split(" ", 1)[1] for line in done.stdout.splitlines() if line.startswith("saved ")]
    assert np.asarray(Image.open(saved)).shape == (40, 56, 3)


def test_any2pix_edit_with_an_image_and_a_sound_names_the_downloads_then_self_checks(comfyui, tmp_path):
    from lmm_edit.selfcheck.audio import write_test_sound

    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(image)
    sound = write_test_sound(tmp_path / "clock.wav", seconds=2.5, sample_rate=44100, channels=2)  # resampled, mixed
    done = _edit(comfyui, tmp_path, "--workflow", "any2pix", "--image", str(image), "--audio", str(sound),
                 "--steps", "2", "--instruction", "add [audio1] to [image1]")
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("sd_xl_base_1.0.safetensors", "instructany2pix_retrained", "imagebind_huge.pth",
                 "ip_adapter_global_local_2_view.bin", "download sdxl-base", "download any2pix-adapter"):
        assert name in done.stdout, f"the message does not name {name}"
    assert done.stdout.count("put it in: ") == 4
    assert "SELF-CHECK PASSED" in done.stdout
    (saved,) = [line.split(" ", 1)[1] for line in done.stdout.splitlines() if line.startswith("saved ")]
    assert np.asarray(Image.open(saved)).shape == (64, 64, 3)  # the base image's centre square at the self-check size
