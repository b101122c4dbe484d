"""README's first command end to end: `python -m lmm_edit edit` boots real ComfyUI in a fresh process.

Without real weights it must say what to download and where, then run the example workflow on
tiny random weights and save the picture (the self-check).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The pack imported as `lmm_edit` from this checkout (what `pip install -e .` gives), in a clean process.
RUN = (
    "import importlib.util, sys; root = sys.argv[1]; "
    "spec = importlib.util.spec_from_file_location('lmm_edit', root + '/__init__.py', "
    "submodule_search_locations=[root]); m = importlib.util.module_from_spec(spec); "
    "sys.modules['lmm_edit'] = m; spec.loader.exec_module(m); "
    "from lmm_edit.__main__ import main; sys.exit(main(sys.argv[2:]))"
)


def _edit(comfyui, tmp_path, *args):
    env = dict(os.environ, COMFYUI_PATH=str(comfyui.comfyui_path))
    return subprocess.run([sys.executable, "-c", RUN, str(ROOT), "edit", "--output", str(tmp_path), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


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
