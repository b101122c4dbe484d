"""``python -m lmm_edit edit``: one edit through real ComfyUI, headless.

Runs an example workflow of the pack (UI format, converted with comfy-cli exactly as
``comfy run`` does) on the user's image and instruction. When the model files the
workflow needs are not in ComfyUI's model folders, it says what to download and where,
then runs the same graph as a self-check on tiny random weights built on the spot.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import tempfile
from dataclasses import dataclass

from ..loaders import model_folders
from ..loaders.model_catalogue import how_to_get
from .comfy_session import PACK_DIR, ComfySession, ComfyUINotFound, find_comfyui

WORKFLOWS_DIR = PACK_DIR / "example_workflows"
SELF_CHECK_STEPS = 4
SELF_CHECK_SIZE = (64, 48)


@dataclass(frozen=True)
class ModelFile:
    folder: str  # folder_paths category, e.g. "checkpoints"
    name: str  # file (relative to the category) or, for model folders, the folder name
    url: str
    is_folder: bool = False


@dataclass(frozen=True)
class EditJob:
    workflow: str
    needs: tuple[ModelFile, ...]
    instruction: tuple[str, str, str | None]  # (node type, input name, node title or None)


IP2P_CHECKPOINT = ModelFile(
    model_folders.CHECKPOINTS, "instruct-pix2pix-00-22000.safetensors",
    "https://huggingface.co/timbrooks/instruct-pix2pix/blob/main/instruct-pix2pix-00-22000.safetensors",
)
JOBS = {
    "instructpix2pix": EditJob(
        workflow="instructpix2pix.json",
        needs=(IP2P_CHECKPOINT,),
        instruction=("CLIPTextEncode", "text", "Instruction"),
    ),
    "smartedit": EditJob(
        workflow="smartedit.json",
        needs=(
            ModelFile(model_folders.SMARTEDIT, "SmartEdit-7B", "https://huggingface.co/TencentARC/SmartEdit-7B "
                      "(the whole release folder; see README, SmartEdit files)", is_folder=True),
            ModelFile(model_folders.LLAVA, "LLaVA-7B-v1", "LLaVA-1.1 7B merged from liuhaotian/LLaVA-Lightning-7B-delta-v1-1 "
                      "onto LLaMA-1 7B, plus LLaMA's tokenizer.model (see README, Preparing LLaVA-1.1)", is_folder=True),
            ModelFile(model_folders.CLIP_VISION, "clip-vit-large-patch14/model.safetensors",
                      "https://huggingface.co/openai/clip-vit-large-patch14 (model.safetensors and config.json)"),
            IP2P_CHECKPOINT,
        ),
        instruction=("LMMEdit_LMMEncode", "instruction", None),
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lmm_edit edit", description=__doc__.splitlines()[0])
    parser.add_argument("--workflow", choices=sorted(JOBS), default="instructpix2pix")
    parser.add_argument("--image", type=pathlib.Path, help="image to edit (default: a generated test image)")
    parser.add_argument("--instruction", default="turn the sky into a sunset")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the workflow's; 4 in the self-check)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--comfyui", help="ComfyUI folder (default: $COMFYUI_PATH, or the one this pack is installed in)")
    parser.add_argument("--output", type=pathlib.Path, help="output folder (default: ComfyUI's output folder)")
    parser.add_argument("--self-check", action="store_true", help="use tiny random weights even if real ones exist")
    parser.add_argument("--gpu", action="store_true", help="run on the GPU (default: CPU unless CUDA is available)")
    parser.add_argument("--base-directory", help="ComfyUI's --base-directory, if you start ComfyUI with one")
    parser.add_argument("--extra-model-paths-config", action="append", default=[], metavar="YAML",
                        help="an extra_model_paths.yaml as given to ComfyUI (the one beside main.py is always read)")
    return parser


def set_inputs(prompt: dict, class_type: str, title: str | None = None, **values) -> int:
    """Sets widget values on every API node of a type (and title); returns how many were set."""
    count = 0
    for node in prompt.values():
        if node["class_type"] == class_type and (title is None or node.get("_meta", {}).get("title") == title):
            node["inputs"].update(values)
            count += 1
    return count


def _is_present(session: ComfySession, model_file: ModelFile) -> bool:
    if model_file.is_folder:
        return any((pathlib.Path(root) / model_file.name).is_dir()
                   for root in session.folder_paths.get_folder_paths(model_file.folder))
    return model_file.name in session.folder_paths.get_filename_list(model_file.folder)


def _missing_files(session: ComfySession, job: EditJob) -> list[ModelFile]:
    return [f for f in job.needs if not _is_present(session, f)]


def _write_self_check_models(job: EditJob, scratch: pathlib.Path) -> dict[str, pathlib.Path]:
    """Tiny random weights under the real names; returns category -> folder to register.

    The IP2P checkpoint is written with ComfyUI's own key maps; the SmartEdit files in the
    release layout, at the widths ComfyUI detects as an SD1.5 InstructPix2Pix UNet.
    """
    import comfy.diffusers_convert
    import comfy.utils

    from ..selfcheck.ip2p_models import TINY_UNET_LDM_CONFIG, build_tiny_ip2p, write_ldm_checkpoint

    folders = {}
    names = {f.folder: f.name for f in job.needs}
    if model_folders.CHECKPOINTS in names:
        folders[model_folders.CHECKPOINTS] = scratch / model_folders.CHECKPOINTS
        write_ldm_checkpoint(build_tiny_ip2p(seed=0), folders[model_folders.CHECKPOINTS] / names[model_folders.CHECKPOINTS],
                             comfy.utils.unet_to_diffusers(dict(TINY_UNET_LDM_CONFIG)),
                             comfy.diffusers_convert.convert_vae_state_dict)
    if model_folders.SMARTEDIT in names:
        from ..selfcheck.smartedit_release import TinySizes, write_smartedit_release

        sizes = TinySizes(qformer_hidden=768, qformer_layers=2, qformer_heads=12, unet_channels=(320, 320))
        written = write_smartedit_release(scratch / "release", seed=0, sizes=sizes, safetensors_copies=False)
        places = {model_folders.SMARTEDIT: written.bundle, model_folders.LLAVA: written.llava,
                  model_folders.CLIP_VISION: written.clip}
        for category, source in places.items():
            target = scratch / category / pathlib.Path(names[category]).parts[0]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(source), str(target))
            folders[category] = target.parent
    return folders


def _explain_missing(missing: list[ModelFile], session: ComfySession) -> str:
    lines = ["Real model weights not found, so this run is a SELF-CHECK on tiny random weights."]
    for f in missing:
        folders = session.folder_paths.get_folder_paths(f.folder)
        kind = "folder" if f.is_folder else "file"
        lines.append(f"  - {kind} {f.name}\n      get it: {how_to_get(f.folder, f.name)}\n      (source: {f.url})"
                     f"\n      put it in: {folders[0] if folders else f.folder}")
    lines.append("Then run the same command again for a real edit.")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    job = JOBS[args.workflow]
    try:
        comfyui = find_comfyui(args.comfyui)
    except ComfyUINotFound as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    import torch

    use_gpu = args.gpu or torch.cuda.is_available()
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="lmm_edit_"))
    try:
        session = ComfySession(comfyui, output_dir=args.output, input_dir=scratch / "input",
                               temp_dir=scratch / "temp", cpu=not use_gpu, base_directory=args.base_directory,
                               extra_model_paths=args.extra_model_paths_config)
        if not session.pack_loaded:
            print("error: LMM Edit failed to load as a ComfyUI custom node (see the log above)", file=sys.stderr)
            return 1
        missing = [] if args.self_check else _missing_files(session, job)
        self_check = args.self_check or bool(missing)
        if missing:
            print(_explain_missing(missing, session))
        image_name = "input.png"
        if args.image is not None:
            shutil.copyfile(args.image, scratch / "input" / image_name)
        else:
            from ..selfcheck.images import write_test_image

            write_test_image(scratch / "input" / image_name, *(SELF_CHECK_SIZE if self_check else (512, 384)))
        if self_check:
            for category, folder in _write_self_check_models(job, scratch).items():
                session.folder_paths.add_model_folder_path(category, str(folder), is_default=True)

        prompt = session.ui_to_api(json.loads((WORKFLOWS_DIR / job.workflow).read_text()))
        set_inputs(prompt, "LoadImage", image=image_name)
        node_type, input_name, title = job.instruction
        set_inputs(prompt, node_type, title=title, **{input_name: args.instruction})
        set_inputs(prompt, "RandomNoise", noise_seed=args.seed)
        if self_check:
            set_inputs(prompt, "SaveImage", filename_prefix="lmm_edit/self_check")
        steps = args.steps or (SELF_CHECK_STEPS if self_check else None)
        if steps:
            set_inputs(prompt, "BasicScheduler", steps=steps)
        result = session.run(prompt)
        if not result.success:
            print(f"error: the workflow failed: {json.dumps(result.error, indent=1, default=str)}", file=sys.stderr)
            return 1
        saved = [pathlib.Path(session.folder_paths.get_directory_by_type(i["type"])) / i["subfolder"] / i["filename"]
                 for ui in result.outputs.values() for i in ui.get("images", []) if i["type"] == "output"]
        for path in saved:
            print(f"saved {path}")
        if self_check:
            print(f"SELF-CHECK PASSED: {job.workflow} ran end to end in ComfyUI on tiny random weights "
                  "(the picture is noise by design).")
        return 0 if saved else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
