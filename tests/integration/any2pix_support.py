"""Shared set-up of the InstructAny2Pix integration tests, as plain idempotent functions the modules wrap in
fixtures: the tiny release in models/lmm_edit/any2pix/ under the name the example workflow uses, the two-view
adapter for the tiny SDXL checkpoint, and a test sound."""

from __future__ import annotations

import shutil

RELEASE = "instructany2pix_retrained"  # loaders/model_catalogue.py: the any2pix download's folder
LLM, IMAGEBIND, PRIOR = f"{RELEASE}/llm-retrained", f"{RELEASE}/imagebind_huge.pth", f"{RELEASE}/prior"
NO_IM_GEN_LLM = f"{RELEASE}/llm-no-im-gen"  # an LLM that answers "no</s>" (the AnswerError tests)
ADAPTER_FILE = "ip_adapter_global_local_2_view.bin"  # the release name (ckpts/sdxl/)
EXAMPLE_SOUND = "example.wav"  # the LoadAudio default of example_workflows/any2pix.json


def ensure_release(comfyui, tmp_path_factory):
    from lmm_edit.selfcheck.any2pix_models import write_llm, write_release

    target = comfyui.models_path / "lmm_edit" / "any2pix" / RELEASE
    if not target.exists():
        staging = tmp_path_factory.mktemp("any2pix") / RELEASE
        write_release(staging)
        write_llm(staging / "llm-no-im-gen", answer=("n", "o", "</s>"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(target))
    return target


def ensure_adapter(comfyui, sdxl_checkpoint) -> str:
    """The two-view adapter file for the tiny SDXL UNet's cross-attention layers, in models/ipadapter."""
    import comfy.sd

    from lmm_edit.loaders.ip_adapter import cross_attention_layers
    from lmm_edit.selfcheck.any2pix_models import EMBED
    from lmm_edit.selfcheck.ip_adapter_files import tiny_global_local_adapter_state, write_adapter_file

    from .image_branch_support import write_into

    folder = comfyui.models_path / "ipadapter"
    comfyui.folder_paths.add_model_folder_path("ipadapter", str(folder))

    def write(path):
        model = comfy.sd.load_checkpoint_guess_config(str(sdxl_checkpoint), output_vae=False, output_clip=False)[0]
        layers = cross_attention_layers(model.model.model_config.unet_config)
        state = tiny_global_local_adapter_state([layer.channels for layer in layers], context_dim=2048, clip_dim=EMBED)
        write_adapter_file(state, path)

    return write_into(folder, ADAPTER_FILE, write)


def ensure_sound(comfyui):
    import pathlib

    from lmm_edit.selfcheck.audio import write_test_sound

    path = pathlib.Path(comfyui.folder_paths.get_input_directory()) / EXAMPLE_SOUND
    return path if path.exists() else write_test_sound(path, channels=2, sample_rate=22050)
