"""Model folders of the pack, registered with ComfyUI's ``folder_paths``.

Every folder lives under ComfyUI's ``models/`` directory (or wherever
``extra_model_paths.yaml`` points the same names). Existing paths of shared
categories such as ``ipadapter`` (also used by ComfyUI_IPAdapter_plus) are kept.
An empty folder shows one entry naming the command that fills it, so ComfyUI's
"Value not in list" error tells the user what to run.
"""

from __future__ import annotations

import os

import folder_paths

from ..loaders.model_catalogue import fetch_hint, how_to_get
from ..loaders.model_folders import register_pack_folders


def register_model_folders() -> None:
    """Adds the pack's categories to folder_paths and creates missing folders (idempotent)."""
    register_pack_folders(folder_paths)


def list_model_subfolders(category: str) -> list[str]:
    """Names of the sub-folders (Hugging Face style model folders) in every path of a category.

    Hidden folders (a prepare-llava run in progress) are left out; none at all gives the fetch hint.
    """
    names: set[str] = set()
    for root in folder_paths.get_folder_paths(category):
        if os.path.isdir(root):
            names.update(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    return sorted(names) or [fetch_hint(category)]


def model_file_options(category: str) -> list[str]:
    """``folder_paths.get_filename_list``, or the fetch hint when the folder holds no model file."""
    return folder_paths.get_filename_list(category) or [fetch_hint(category)]


def resolve_model_file(category: str, name: str) -> str:
    """``folder_paths.get_full_path``, with an error naming the command that fetches a missing file."""
    path = folder_paths.get_full_path(category, name)
    if path is None:
        raise FileNotFoundError(
            f"Model file '{name}' not found in {folder_paths.get_folder_paths(category)}. Get it with: "
            f"{how_to_get(category, name)}, then press R in ComfyUI to refresh the list."
        )
    return path


def resolve_model_subfolder(category: str, name: str) -> str:
    """Full path of a model folder picked in a dropdown; a clear error names where we looked."""
    searched = folder_paths.get_folder_paths(category)
    for root in searched:
        candidate = os.path.join(root, name)
        if name and not name.startswith("(") and os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(
        f"Model folder '{name}' not found in {searched}. Get it with: {how_to_get(category, name)} "
        f"(see the LMM Edit README, section 'Model files'), then press R in ComfyUI to refresh the list."
    )
