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

from ..loaders.model_catalogue import how_to_get
from .comfy_session import PACK_DIR, ComfySession, ComfyUINotFound, find_comfyui
from .edit_jobs import JOBS, EditJob, ModelFile
from .edit_self_check import write_self_check_models as _write_self_check_models

__all__ = ["JOBS", "EditJob", "ModelFile", "main", "set_inputs", "_write_self_check_models"]

WORKFLOWS_DIR = PACK_DIR / "example_workflows"
SELF_CHECK_STEPS = 4
SELF_CHECK_SIZE = (64, 48)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lmm_edit edit", description=__doc__.splitlines()[0])
    parser.add_argument("--workflow", choices=sorted(JOBS), default="instructpix2pix")
    parser.add_argument("--image", type=pathlib.Path, help="image to edit (default: a generated test image)")
    parser.add_argument("--audio", type=pathlib.Path,
                        help="sound for [audio1] (any2pix only; default: a generated test sound)")
    parser.add_argument("--instruction", help="the edit (default: the workflow's example, e.g. 'turn the sky into a "
                        "sunset'; any2pix: 'add [audio1] to [image1]')")
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


def _write_audio_input(job: EditJob, audio: pathlib.Path | None, input_dir: pathlib.Path) -> str | None:
    """The sound for the workflow's LoadAudio (the user's file, or a generated test sound); None: no audio input."""
    if job.audio is None:
        return None
    name = "input_audio" + (audio.suffix.lower() if audio is not None else ".wav")
    if audio is not None:
        shutil.copyfile(audio, input_dir / name)
    else:
        from ..selfcheck.audio import write_test_sound

        write_test_sound(input_dir / name)
    return name


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
    if args.audio is not None and job.audio is None:
        print(f"error: --audio: the {args.workflow} workflow takes no sound (--workflow any2pix does)", file=sys.stderr)
        return 2
    for given in (args.image, args.audio):
        if given is not None and not given.is_file():
            print(f"error: no file at {given}", file=sys.stderr)
            return 2
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
        audio_name = _write_audio_input(job, args.audio, scratch / "input")
        if self_check:
            for category, folder in _write_self_check_models(job, scratch).items():
                session.folder_paths.add_model_folder_path(category, str(folder), is_default=True)

        prompt = session.ui_to_api(json.loads((WORKFLOWS_DIR / job.workflow).read_text()))
        set_inputs(prompt, "LoadImage", image=image_name)
        node_type, input_name, title = job.instruction
        set_inputs(prompt, node_type, title=title, **{input_name: args.instruction or job.default_instruction})
        if audio_name is not None:
            set_inputs(prompt, job.audio[0], **{job.audio[1]: audio_name})
        for node_type, name in job.seeds:
            set_inputs(prompt, node_type, **{name: args.seed})
        if self_check:
            set_inputs(prompt, "SaveImage", filename_prefix="lmm_edit/self_check")
            for node_type, name, value in job.self_check_inputs:
                set_inputs(prompt, node_type, **{name: value})
        steps = args.steps or (SELF_CHECK_STEPS if self_check else None)
        if steps:
            for node_type, name in job.steps:
                set_inputs(prompt, node_type, **{name: steps})
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
