"""Names of the model folders the pack reads (README, "Model files"): the one place for them.

Keys are ComfyUI ``folder_paths`` categories, values the sub-folder of ``models/``. Plain strings,
no ComfyUI import, so the command line can name them before ComfyUI is booted.
"""

from __future__ import annotations

import os

SMARTEDIT = "lmm_edit_smartedit"  # models/lmm_edit/smartedit/<release bundle>/
LLAVA = "lmm_edit_llava"  # models/lmm_edit/llava/<LLaVA-1.1 folder>/
ANY2PIX = "lmm_edit_any2pix"  # models/lmm_edit/any2pix/
MLLM = "lmm_edit_mllm"  # models/lmm_edit/mllm/<transformers VLM folder>/ (LMMEdit_MLLMLoader)
IPADAPTER = "ipadapter"  # models/ipadapter/, shared with ComfyUI_IPAdapter_plus
CLIP_VISION = "clip_vision"  # ComfyUI core
CHECKPOINTS = "checkpoints"  # ComfyUI core

PACK_FOLDERS: dict[str, str] = {
    SMARTEDIT: os.path.join("lmm_edit", "smartedit"),
    LLAVA: os.path.join("lmm_edit", "llava"),
    ANY2PIX: os.path.join("lmm_edit", "any2pix"),
    MLLM: os.path.join("lmm_edit", "mllm"),
    IPADAPTER: "ipadapter",
}
