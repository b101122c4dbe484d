"""The edit command's self-check weights: tiny random models under the real names, in the real layouts.

``write_self_check_models(job, scratch)`` writes what ``job.needs`` names under ``scratch/<category>/`` and
returns ``{category: folder}`` for ComfyUI's ``folder_paths``. Needs ComfyUI importable (its key maps and
model classes are used so the files are what ComfyUI itself reads back).
"""

from __future__ import annotations

import pathlib
import shutil

from ..loaders import model_folders
from .edit_jobs import EditJob


def _ip2p_checkpoint(path: pathlib.Path) -> None:
    import comfy.diffusers_convert
    import comfy.utils

    from ..selfcheck.ip2p_models import TINY_UNET_LDM_CONFIG, build_tiny_ip2p, write_ldm_checkpoint

    write_ldm_checkpoint(build_tiny_ip2p(seed=0), path, comfy.utils.unet_to_diffusers(dict(TINY_UNET_LDM_CONFIG)),
                         comfy.diffusers_convert.convert_vae_state_dict)


def _smartedit(names: dict[str, str], scratch: pathlib.Path) -> dict[str, pathlib.Path]:
    """The SmartEdit files in the release layout, at the widths ComfyUI detects as an SD1.5 IP2P UNet."""
    from ..selfcheck.smartedit_release import TinySizes, write_smartedit_release

    sizes = TinySizes(qformer_hidden=768, qformer_layers=2, qformer_heads=12, unet_channels=(320, 320))
    written = write_smartedit_release(scratch / "release", seed=0, sizes=sizes, safetensors_copies=False)
    places = {model_folders.SMARTEDIT: written.bundle, model_folders.LLAVA: written.llava,
              model_folders.CLIP_VISION: written.clip}
    folders = {}
    for category, source in places.items():
        target = scratch / category / pathlib.Path(names[category]).parts[0]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), str(target))
        folders[category] = target.parent
    return folders


def _any2pix(job: EditJob, scratch: pathlib.Path) -> dict[str, pathlib.Path]:
    """A tiny SDXL-family checkpoint, the release folder (LLM, prior), ImageBind and the two-view adapter sized for
    the tiny SDXL UNet's cross-attention layers."""
    from ..loaders.ip_adapter import cross_attention_layers
    from ..selfcheck.any2pix_models import EMBED, write_imagebind, write_release
    from ..selfcheck.ip_adapter_files import tiny_global_local_adapter_state, write_adapter_file
    from ..selfcheck.sdxl_models import TINY_SDXL_UNET_CONFIG, write_tiny_sdxl_checkpoint

    folders = {}
    for need in job.needs:
        folder = folders.setdefault(need.folder, scratch / need.folder)
        target = folder / need.name
        if need.folder == model_folders.CHECKPOINTS:
            write_tiny_sdxl_checkpoint(target)
        elif need.folder == model_folders.ANY2PIX and need.is_folder:
            write_release(target)
        elif need.folder == model_folders.ANY2PIX and not target.exists():  # write_release wrote the release's
            write_imagebind(target)
        elif need.folder == model_folders.ANY2PIX:
            continue
        elif need.folder == model_folders.IPADAPTER:
            layers = cross_attention_layers(TINY_SDXL_UNET_CONFIG)
            state = tiny_global_local_adapter_state([layer.channels for layer in layers],
                                                    context_dim=TINY_SDXL_UNET_CONFIG["context_dim"], clip_dim=EMBED)
            write_adapter_file(state, target)
        else:
            raise ValueError(f"no tiny weights for {need.folder}/{need.name}")
    return folders


def write_self_check_models(job: EditJob, scratch: pathlib.Path) -> dict[str, pathlib.Path]:
    """Tiny random weights under the real names; returns category -> folder to register."""
    if job.tiny == "any2pix":
        return _any2pix(job, scratch)
    names = {f.folder: f.name for f in job.needs}
    folders = {}
    if model_folders.CHECKPOINTS in names:
        folders[model_folders.CHECKPOINTS] = scratch / model_folders.CHECKPOINTS
        _ip2p_checkpoint(folders[model_folders.CHECKPOINTS] / names[model_folders.CHECKPOINTS])
    if job.tiny == "smartedit":
        folders.update(_smartedit(names, scratch))
    return folders
