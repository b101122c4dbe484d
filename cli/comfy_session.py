"""Real ComfyUI, booted in this process without a server, with LMM Edit loaded as a custom node.

Used by the integration tests and by ``python -m lmm_edit edit``. The boot order follows
ComfyUI's own ``main.py`` (docs/comfyui.md, In-process ComfyUI): arguments are set before
``folder_paths`` and ``comfy.model_management`` are imported, ``utils.extra_config`` is
imported before ``nodes`` (which puts ``comfy/`` first on sys.path).
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import importlib.util
import os
import pathlib
import sys
import uuid
from dataclasses import dataclass, field

PACK_DIR = pathlib.Path(__file__).resolve().parent.parent


class ComfyUINotFound(RuntimeError):
    pass


def _is_comfyui(path: str) -> bool:
    return (pathlib.Path(path) / "nodes.py").is_file() and (pathlib.Path(path) / "comfy").is_dir()


def find_comfyui(explicit: str | None = None) -> pathlib.Path:
    """ComfyUI checkout from the argument if given, else $COMFYUI_PATH, else the custom_nodes folder we sit in."""
    if explicit:
        candidates = [explicit]
    else:
        candidates = [c for c in (os.environ.get("COMFYUI_PATH"),) if c]
        if PACK_DIR.parent.name == "custom_nodes":
            candidates.append(str(PACK_DIR.parent.parent))
    for candidate in candidates:
        if _is_comfyui(candidate):
            return pathlib.Path(candidate).resolve()
    raise ComfyUINotFound(
        "ComfyUI not found"
        + (f" at {candidates}" if candidates else "")
        + ". Set COMFYUI_PATH to your ComfyUI folder (the one with main.py and nodes.py), "
        "or install ComfyUI first: pip install comfy-cli && comfy --workspace ~/ComfyUI install"
    )


# Modules ComfyUI imports at start-up (ComfyUI 0.3.64 `main.py`), by import name.
COMFYUI_IMPORTS = ("torchvision", "torchsde", "einops", "transformers", "safetensors", "aiohttp", "av", "psutil",
                   "PIL", "yaml", "scipy", "sqlalchemy", "alembic")


def missing_comfyui_requirements() -> list[str]:
    """ComfyUI's start-up imports that this Python lacks (checked without importing them)."""
    return [name for name in COMFYUI_IMPORTS if importlib.util.find_spec(name) is None]


def requirements_hint(comfyui_path: str | os.PathLike, missing: list[str]) -> str:
    return (f"ComfyUI's requirements are not installed in this Python ({sys.executable}; missing: "
            f"{', '.join(missing)}): run with ComfyUI's own Python (PYTHON=/path/to/python bash scripts/test.sh) "
            f"or pip install -r {pathlib.Path(comfyui_path) / 'requirements.txt'}")


class _QuietServer:
    """What PromptExecutor and the progress handler use of PromptServer."""

    client_id = None
    last_node_id = None
    last_prompt_id = None

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def send_sync(self, event, data, sid=None) -> None:
        self.events.append((event, data))

    def send_progress_text(self, text, node_id, sid=None) -> None:
        self.events.append(("progress_text", {"node": node_id, "text": text}))


@dataclass
class RunResult:
    success: bool
    outputs: dict = field(default_factory=dict)  # node id -> ui dict
    messages: list = field(default_factory=list)
    error: dict | None = None


class ComfySession:
    """One booted ComfyUI with this pack loaded. Create once per process."""

    def __init__(self, comfyui_path: str | os.PathLike, *, output_dir: str | os.PathLike | None = None,
                 input_dir: str | os.PathLike | None = None, temp_dir: str | os.PathLike | None = None,
                 models_dir: str | os.PathLike | None = None, model_folders: dict[str, list[str]] | None = None,
                 cpu: bool = True, force_fp32: bool = False, base_directory: str | os.PathLike | None = None,
                 extra_model_paths: list[str] | None = None) -> None:
        """Boots ComfyUI; directories left as None keep ComfyUI's own (the user's models, output...).

        base_directory / extra_model_paths: ComfyUI's --base-directory / --extra-model-paths-config.
        """
        self.comfyui_path = pathlib.Path(comfyui_path)
        if str(self.comfyui_path) not in sys.path:
            sys.path.insert(0, str(self.comfyui_path))

        from comfy.cli_args import args

        args.cpu = cpu
        args.force_fp32 = force_fp32
        args.fp32_text_enc = force_fp32
        args.disable_api_nodes = True
        if base_directory is not None:
            args.base_directory = os.path.abspath(base_directory)  # read by folder_paths at import

        extra_config = importlib.import_module("utils.extra_config")
        import folder_paths

        if models_dir is None:
            user_paths = self.comfyui_path / "extra_model_paths.yaml"
            for config in ([str(user_paths)] if user_paths.is_file() else []) + list(extra_model_paths or []):
                extra_config.load_extra_path_config(config)
        else:
            folder_paths.models_dir = str(models_dir)
        for setter, path in ((folder_paths.set_output_directory, output_dir),
                             (folder_paths.set_input_directory, input_dir),
                             (folder_paths.set_temp_directory, temp_dir)):
            if path is not None:
                pathlib.Path(path).mkdir(parents=True, exist_ok=True)
                setter(str(path))
        for category, paths in (model_folders or {}).items():
            for path in paths:
                folder_paths.add_model_folder_path(category, str(path), is_default=True)
        folder_paths.folder_names_and_paths["custom_nodes"] = ([str(PACK_DIR.parent)], set())

        import comfy.model_management  # noqa: F401  (reads args at import)
        import execution
        import server

        import nodes

        self.nodes = nodes
        self.execution = execution
        self.folder_paths = folder_paths
        self.server = _QuietServer()
        server.PromptServer.instance = self.server

        builtin_failures = asyncio.run(nodes.init_builtin_extra_nodes())
        self.builtin_failures = builtin_failures
        core_ids = set(nodes.NODE_CLASS_MAPPINGS)
        self.pack_loaded = asyncio.run(nodes.load_custom_node(str(PACK_DIR), ignore=core_ids))
        self.pack_node_ids = sorted(set(nodes.NODE_CLASS_MAPPINGS) - core_ids)
        self.executor = execution.PromptExecutor(self.server, cache_type=execution.CacheType.CLASSIC)

    # --- node definitions, as GET /object_info serves them -------------------------------
    def node_info(self, node_id: str) -> dict:
        from comfy_api.internal import _ComfyNodeInternal

        cls = self.nodes.NODE_CLASS_MAPPINGS[node_id]
        if issubclass(cls, _ComfyNodeInternal):
            return cls.GET_NODE_INFO_V1()
        inputs = cls.INPUT_TYPES()
        return {
            "input": inputs,
            "input_order": {key: list(value.keys()) for key, value in inputs.items()},
            "output": cls.RETURN_TYPES,
            "output_is_list": getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)),
            "output_name": getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES),
            "name": node_id,
            "display_name": self.nodes.NODE_DISPLAY_NAME_MAPPINGS.get(node_id, node_id),
            "description": getattr(cls, "DESCRIPTION", ""),
            "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
            "category": getattr(cls, "CATEGORY", "sd"),
            "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
        }

    def object_info(self) -> dict:
        return {node_id: self.node_info(node_id) for node_id in self.nodes.NODE_CLASS_MAPPINGS}

    def ui_to_api(self, workflow: dict) -> dict:
        """UI-format workflow (as the frontend saves it) -> API prompt, with comfy-cli's converter."""
        try:
            from comfy_cli.workflow_to_api import convert_ui_to_api
        except ImportError as error:
            raise ImportError("converting a UI-format workflow needs comfy-cli: pip install 'lmm-edit[cli]' "
                              "(or pip install 'comfy-cli>=1.2') into this Python") from error
        return convert_ui_to_api(copy.deepcopy(workflow), self.object_info())

    # --- execution ---------------------------------------------------------------------
    def run(self, prompt: dict) -> RunResult:
        prompt_id = str(uuid.uuid4())
        valid, error, outputs, node_errors = asyncio.run(self.execution.validate_prompt(prompt_id, prompt, None))
        if not valid:
            return RunResult(False, error={"error": error, "node_errors": node_errors})
        self.server.events.clear()
        self.executor.execute(prompt, prompt_id, extra_data={}, execute_outputs=outputs)
        history = self.executor.history_result or {}
        failure = next((data for event, data in self.executor.status_messages if event == "execution_error"), None)
        return RunResult(self.executor.success, outputs=history.get("outputs", {}),
                         messages=list(self.executor.status_messages), error=failure)

    def unload_models(self) -> None:
        import comfy.model_management

        comfy.model_management.unload_all_models()
        comfy.model_management.soft_empty_cache()
