"""``python -m lmm_edit download <name> [--list]``: model files from the Hugging Face Hub into ComfyUI's folders."""

from __future__ import annotations

import argparse
import pathlib
import sys

from ..loaders.model_catalogue import DOWNLOADS, PREPARE_LLAVA, Download
from ..loaders.model_folders import PACK_FOLDERS
from .comfy_session import ComfyUINotFound, find_comfyui
from .model_paths import ModelFolders, comfyui_model_folders


def add_folder_arguments(parser: argparse.ArgumentParser) -> None:
    """The ComfyUI options that decide where model folders are (same names as ComfyUI's main.py)."""
    parser.add_argument("--comfyui", help="ComfyUI folder (default: $COMFYUI_PATH, or the one this pack is installed in)")
    parser.add_argument("--extra-model-paths-config", action="append", default=[], metavar="YAML",
                        help="an extra_model_paths.yaml as given to ComfyUI (the one beside main.py is always read)")
    parser.add_argument("--base-directory", help="ComfyUI's --base-directory, if you start ComfyUI with one")


def model_folders_from(args: argparse.Namespace) -> ModelFolders:
    return comfyui_model_folders(find_comfyui(args.comfyui), args.extra_model_paths_config, args.base_directory)


def _where(download: Download, folders: ModelFolders | None) -> list[str]:
    lines = []
    for category, relative in download.destinations():
        folder = folders.destination(category, relative) if folders else pathlib.Path(
            "models", PACK_FOLDERS.get(category, category), relative)
        lines.append(f"      -> {folder}  ({category})")
    return lines


def describe(folders: ModelFolders | None) -> str:
    lines = []
    for download in DOWNLOADS.values():
        lines.append(f"{download.name:16} {download.approx_size:>12}  {download.repo_id}: {download.what}")
        lines += _where(download, folders)
    lines.append("LLaVA-1.1 for SmartEdit is made locally from a delta and your LLaMA-1 weights: download "
                 + " or ".join(d for d, _ in PREPARE_LLAVA.values()) + ", then run prepare-llava (see README)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmm_edit download",
                                     description="Fetch model files from the Hugging Face Hub into ComfyUI's model "
                                     "folders (resumable, verified; honours HF_HUB_OFFLINE and HF_ENDPOINT).")
    parser.add_argument("name", nargs="?", choices=sorted(DOWNLOADS), help="what to fetch (see --list)")
    parser.add_argument("--list", action="store_true", help="what each name fetches, its size and where it goes")
    add_folder_arguments(parser)
    args = parser.parse_args(argv)
    if not args.list and not args.name:
        parser.print_usage()
        print(describe(None))
        return 2
    try:
        folders = model_folders_from(args)
    except ComfyUINotFound as err:
        if not args.list:
            print(err, file=sys.stderr)
            return 2
        folders = None
    if args.list:
        print(describe(folders))
        return 0
    from .hub_download import DownloadError, run_download  # huggingface_hub only for an actual download

    try:
        fetched = run_download(DOWNLOADS[args.name], folders)
    except DownloadError as err:
        print(f"download {args.name}: {err}", file=sys.stderr)
        return 1
    print(f"{args.name}: {fetched} file(s) fetched; ComfyUI lists them after a refresh (press R)")
    return 0
