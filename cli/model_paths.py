"""ComfyUI's model folders as the nodes see them, without booting ComfyUI (no torch import).

Follows ComfyUI's ``main.py``: ``--base-directory`` is set before ``folder_paths`` is imported,
``extra_model_paths.yaml`` beside ``main.py`` is read, then every ``--extra-model-paths-config``
file; the pack's own categories are added after them, as when ComfyUI loads the pack. The first
path of a category is where downloads go (ComfyUI's default folder for it).
"""

from __future__ import annotations

import importlib
import os
import pathlib
import sys
from dataclasses import dataclass

from ..loaders.model_folders import register_pack_folders


@dataclass(frozen=True)
class ModelFolders:
    """category -> folders, first = where new files go."""

    paths: dict[str, list[str]]

    def folders(self, category: str) -> list[pathlib.Path]:
        if category not in self.paths:
            raise KeyError(f"ComfyUI has no model folder category {category!r}")
        return [pathlib.Path(p) for p in self.paths[category]]

    def destination(self, category: str, relative: str) -> pathlib.Path:
        return self.folders(category)[0] / relative

    def find(self, category: str, relative: str) -> pathlib.Path | None:
        """Where ``relative`` (a file or folder) already exists in any folder of the category."""
        for folder in self.folders(category):
            if (folder / relative).exists():
                return folder / relative
        return None


def comfyui_model_folders(comfyui: pathlib.Path, extra_configs: list[str] | None = None,
                          base_directory: str | None = None) -> ModelFolders:
    """Resolve the folders with ComfyUI's own ``folder_paths`` and ``utils.extra_config``."""
    if str(comfyui) not in sys.path:
        sys.path.insert(0, str(comfyui))
    from comfy.cli_args import args

    if base_directory:
        args.base_directory = os.path.abspath(base_directory)
    folder_paths = importlib.import_module("folder_paths")
    extra_config = importlib.import_module("utils.extra_config")
    beside_main = comfyui / "extra_model_paths.yaml"
    for config in ([str(beside_main)] if beside_main.is_file() else []) + list(extra_configs or []):
        extra_config.load_extra_path_config(config)
    register_pack_folders(folder_paths)
    return ModelFolders({name: list(paths) for name, (paths, _) in folder_paths.folder_names_and_paths.items()})
