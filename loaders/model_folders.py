"""Names of the model folders the pack reads (README, "Model files"): the one place for them.

Keys are ComfyUI ``folder_paths`` categories, values the sub-folder of ``models/``. Plain strings,
no ComfyUI import, so the command line can name them before ComfyUI is booted.
"""

from __future__ import annotations

import os

SMARTEDIT = "lmm_edit_smartedit"  # models/lmm_edit/smartedit/<release bundle>/
LLAVA = "lmm_edit_llava"  # models/lmm_edit/llava/<LLaVA-1.1 folder>/
LLAVA_DELTA = "lmm_edit_llava_delta"  # models/lmm_edit/llava_delta/<delta folder>/ (input of prepare-llava)
ANY2PIX = "lmm_edit_any2pix"  # models/lmm_edit/any2pix/
MLLM = "lmm_edit_mllm"  # models/lmm_edit/mllm/<transformers VLM folder>/ (LMMEdit_MLLMLoader)
IPADAPTER = "ipadapter"  # models/ipadapter/, shared with ComfyUI_IPAdapter_plus
CLIP_VISION = "clip_vision"  # ComfyUI core
CHECKPOINTS = "checkpoints"  # ComfyUI core

PACK_FOLDERS: dict[str, str] = {
    SMARTEDIT: os.path.join("lmm_edit", "smartedit"),
    LLAVA: os.path.join("lmm_edit", "llava"),
    LLAVA_DELTA: os.path.join("lmm_edit", "llava_delta"),
    ANY2PIX: os.path.join("lmm_edit", "any2pix"),
    MLLM: os.path.join("lmm_edit", "mllm"),
    IPADAPTER: "ipadapter",
}


def register_pack_folders(folder_paths, create: bool = True) -> None:
    """Adds the pack's categories to ComfyUI's ``folder_paths`` module (passed in: no ComfyUI import here).

    Paths already known for a category (``extra_model_paths.yaml``, another pack) stay first, so the
    command line resolves folders exactly as ComfyUI does once the pack is loaded. Idempotent.
    """
    for category, sub_folder in PACK_FOLDERS.items():
        path = os.path.join(folder_paths.models_dir, sub_folder)
        if create:
            os.makedirs(path, exist_ok=True)
        if category in folder_paths.folder_names_and_paths:
            paths, extensions = folder_paths.folder_names_and_paths[category]
            if path not in paths:
                paths.append(path)
            extensions.update(folder_paths.supported_pt_extensions)
        else:
            folder_paths.folder_names_and_paths[category] = ([path], set(folder_paths.supported_pt_extensions))
