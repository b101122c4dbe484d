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

from .comfy_session import PACK_DIR, ComfySession, ComfyUINotFound, find_comfyui

WORKFLOWS_DIR = PACK_DIR / "example_workflows"
SELF_CHECK_STEPS = 4
SELF_CHECK_SIZE = (64, 48)


@dataclass(frozen=True)
class ModelFile:
    folder: str  # folder_paths category, e.g. "checkpoints"
    name: str
    url: str


@dataclass(frozen=True)
class EditJob:
    workflow: str
    needs: tuple[ModelFile, ...]


JOBS = {
    "instructpix2pix": EditJob(
        workflow="instructpix2pix.json",
        needs=(ModelFile("checkpoints", "instruct-pix2pix-00-22000.safetensors",
                         "https://huggingface.co/timbrooks/instruct-pix2pix/blob/main/instruct-pix2pix-00-22000.safetensors"),),
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
    return parser


def set_inputs(prompt: dict, class_type: str, title: str | None = None, **values) -> int:
    """Sets widget values on every API node of a type (and title); returns how many were set."""
    count = 0
    for node in prompt.values():
        if node["class_type"] == class_type and (title is None or node.get("_meta", {}).get("title") == title):
            node["inputs"].update(values)
            count += 1
    return count


def _missing_files(session: ComfySession, job: EditJob) -> list[ModelFile]:
    return [f for f in job.needs if f.name not in session.folder_paths.get_filename_list(f.folder)]


def _write_self_check_models(job: EditJob, models_dir: pathlib.Path) -> None:
    """Tiny random weights under the real file names, written with ComfyUI's own key maps."""
    sys.path.insert(0, str(PACK_DIR / "tests"))
    import comfy.diffusers_convert
    import comfy.utils

    from factories.ip2p_models import TINY_UNET_LDM_CONFIG, build_tiny_ip2p, write_ldm_checkpoint

    for model_file in job.needs:
        write_ldm_checkpoint(build_tiny_ip2p(seed=0), models_dir / model_file.folder / model_file.name,
                             comfy.utils.unet_to_diffusers(dict(TINY_UNET_LDM_CONFIG)),
                             comfy.diffusers_convert.convert_vae_state_dict)


def _test_image(path: pathlib.Path, size: tuple[int, int]) -> pathlib.Path:
    import numpy as np
    from PIL import Image

    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([127 + 100 * np.sin(x / 7.0), 127 + 100 * np.cos(y / 5.0), 127 + 60 * np.sin((x + y) / 9.0)], -1)
    Image.fromarray(rgb.astype("uint8")).save(path)
    return path


def _explain_missing(missing: list[ModelFile], session: ComfySession) -> str:
    lines = ["Real model weights not found, so this run is a SELF-CHECK on tiny random weights."]
    for f in missing:
        folders = session.folder_paths.get_folder_paths(f.folder)
        lines.append(f"  - download {f.name}\n      from {f.url}\n      into {folders[0] if folders else f.folder}")
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
                               temp_dir=scratch / "temp", cpu=not use_gpu)
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
            _test_image(scratch / "input" / image_name, SELF_CHECK_SIZE if self_check else (512, 384))
        if self_check:
            _write_self_check_models(job, scratch)
            for model_file in job.needs:
                session.folder_paths.add_model_folder_path(model_file.folder, str(scratch / model_file.folder),
                                                           is_default=True)

        prompt = session.ui_to_api(json.loads((WORKFLOWS_DIR / job.workflow).read_text()))
        set_inputs(prompt, "LoadImage", image=image_name)
        set_inputs(prompt, "CLIPTextEncode", title="Instruction", text=args.instruction)
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
                 for ui in result.outputs.values() for i in ui.get("images", [])]
        for path in saved:
            print(f"saved {path}")
        if self_check:
            print(f"SELF-CHECK PASSED: {job.workflow} ran end to end in ComfyUI on tiny random weights "
                  "(the picture is noise by design).")
        return 0 if saved else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
