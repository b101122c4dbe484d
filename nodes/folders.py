"""Model folders of the pack, registered with ComfyUI's ``folder_paths``.

Every folder lives under ComfyUI's ``models/`` directory (or wherever
``extra_model_paths.yaml`` points the same names). Existing paths of shared
categories such as ``ipadapter`` (also used by ComfyUI_IPAdapter_plus) are kept.
"""

from __future__ import annotations

import os

import folder_paths

from ..loaders.model_folders import PACK_FOLDERS


def register_model_folders() -> None:
    """Adds the pack's categories to folder_paths and creates missing folders (idempotent)."""
    for category, sub_folder in PACK_FOLDERS.items():
        path = os.path.join(folder_paths.models_dir, sub_folder)
        os.makedirs(path, exist_ok=True)
        if category in folder_paths.folder_names_and_paths:
            paths, extensions = folder_paths.folder_names_and_paths[category]
            if path not in paths:
                paths.append(path)
            extensions.update(folder_paths.supported_pt_extensions)
        else:
            folder_paths.folder_names_and_paths[category] = ([path], set(folder_paths.supported_pt_extensions))


def list_model_subfolders(category: str) -> list[str]:
    """Names of the sub-folders (Hugging Face style model folders) in every path of a category."""
    names: set[str] = set()
    for root in folder_paths.get_folder_paths(category):
        if os.path.isdir(root):
            names.update(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    return sorted(names)


def resolve_model_subfolder(category: str, name: str) -> str:
    """Full path of a model folder picked in a dropdown; a clear error names where we looked."""
    searched = folder_paths.get_folder_paths(category)
    for root in searched:
        candidate = os.path.join(root, name)
        if os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(
        f"Model folder '{name}' not found in {searched}. Put the folder there (see the LMM Edit README, "
        f"section 'Model files') and press R in ComfyUI to refresh the list."
    )
