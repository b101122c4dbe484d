"""``python -m lmm_edit prepare-llava --base <LLaMA-1> --delta <LLaVA delta> [--out | --name]``."""

from __future__ import annotations

import argparse
import pathlib
import sys

from ..loaders import model_folders
from ..loaders.errors import ModelFileError
from ..loaders.model_catalogue import PREPARE_LLAVA
from .comfy_session import ComfyUINotFound
from .download_command import add_folder_arguments, model_folders_from


def default_name(delta: pathlib.Path) -> str:
    """The folder name the example workflows expect for a known delta (LLaVA-7B-v1), else the delta's minus -delta."""
    for name, (_, delta_folder) in PREPARE_LLAVA.items():
        if delta.name == delta_folder:
            return name
    return delta.name.replace("-delta", "")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lmm_edit prepare-llava",
        description="Add LLaVA-1.1 delta weights to the original LLaMA-1 weights (as LLaVA's apply_delta.py, one shard "
        "at a time) and write the result into models/lmm_edit/llava/<name>/ for the SmartEdit Loader.")
    parser.add_argument("--base", required=True, type=pathlib.Path, help="LLaMA-1 folder in Hugging Face format")
    parser.add_argument("--delta", required=True, type=pathlib.Path,
                        help="LLaVA-1.1 delta folder (python -m lmm_edit download llava-7b-delta puts it in "
                        "models/lmm_edit/llava_delta/)")
    parser.add_argument("--out", type=pathlib.Path, help="output folder (default: models/lmm_edit/llava/<name>)")
    parser.add_argument("--name", help="output folder name (default: LLaVA-7B-v1 / LLaVA-13B-v1 for the known deltas)")
    add_folder_arguments(parser)
    args = parser.parse_args(argv)
    from ..loaders.llava_delta import apply_delta  # torch only for an actual run

    target = args.out
    if target is None:
        try:
            folders = model_folders_from(args)
        except ComfyUINotFound as err:
            print(f"{err}\nOr give the output folder with --out.", file=sys.stderr)
            return 2
        target = folders.destination(model_folders.LLAVA, args.name or default_name(args.delta))
    try:
        written = apply_delta(args.base, args.delta, target)
    except ModelFileError as err:
        print(f"prepare-llava: {err}", file=sys.stderr)
        return 1
    print(f"LLaVA-1.1 written to {written}; pick '{written.name}' as llava in the SmartEdit Loader (press R to refresh)")
    return 0
