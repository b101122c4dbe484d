"""One worker: a booted ComfyUI session that runs items of one workflow, one after the other.

Models load once: the API prompt is queued again with only the item's inputs changed, so ComfyUI's
cache keeps every node whose inputs did not change (the loaders; and the LMM encode when only the
seed changes, since the seed goes to the sampler's noise, not to the encode node). The same class
runs in process and inside a Ray actor.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass

from ...loaders import model_folders
from ..comfy_session import ComfySession
from .inputs import ItemInputs
from .store import DONE, FAILED
from .workflow import Workflow, WorkflowError, apply_item, check_prompt, is_ui_format

OUTPUT_PREFIX = "lmm_edit_batch/item"
SCRATCH_PREFIX = "lmm_edit_batch_"  # + "<pid>_": a worker's scratch folder (ComfyUI's folders, self-check weights)
LMM_ENCODE = "LMMEdit_LMMEncode"
LMM_TEXT_KEY = "lmm_edit_text"  # nodes/token_status.py UI_TEXT_KEY: status lines shown on the node
ANSWER_PREFIXES = ("LMM answer: ", "Answer: ")  # SmartEdit's and the VLM families' status lines


class WorkerStartError(RuntimeError):
    pass


@dataclass(frozen=True)
class WorkerOptions:
    comfyui: str
    steps: int | None = None
    self_check: bool = False
    metrics: bool = False
    metrics_size: int | None = 256
    clip_name: str | None = None
    models_dir: str | None = None
    cpu: bool = True

    def hashed(self) -> dict:
        """The options that change an item's result line (part of its hash)."""
        return dict(steps=self.steps, self_check=self.self_check, metrics=self.metrics,
                    metrics_size=self.metrics_size if self.metrics else None,
                    clip_name=self.clip_name if self.metrics else None)


@dataclass
class ItemResult:
    record: dict  # the results line, less the output path (the driver writes the image)
    png: bytes | None = None


def add_models_dir(session: ComfySession, models_dir: str) -> list[str]:
    """Registers every <models_dir>/<category folder> that exists, first in line; returns the categories."""
    added = []
    for category in list(session.folder_paths.folder_names_and_paths):
        folder = pathlib.Path(models_dir) / model_folders.PACK_FOLDERS.get(category, category)
        if folder.is_dir():
            session.folder_paths.add_model_folder_path(category, str(folder), is_default=True)
            added.append(category)
    return added


def lmm_status(outputs: dict, prompt: dict) -> tuple[str | None, str | None]:
    """(the LMM's answer, whether its image tokens came out as trained) from the encode node's UI text."""
    for node_id, node in prompt.items():
        if node["class_type"] != LMM_ENCODE or not outputs.get(node_id, {}).get(LMM_TEXT_KEY):
            continue
        lines = outputs[node_id][LMM_TEXT_KEY][0].split("\n")
        answer = next((line.split(": ", 1)[1] for line in lines if line.startswith(ANSWER_PREFIXES)), None)
        return answer, lines[0]
    return None, None


def error_message(error: dict | None) -> str:
    """One readable line from ComfyUI's validation or execution error."""
    if not error:
        return "the workflow failed without an error message"
    if "exception_message" in error:
        return f"{error.get('node_type')} (node {error.get('node_id')}): {error['exception_type']}: " \
               f"{error['exception_message'].strip()}"
    parts = [str(error.get("error", {}).get("message", error.get("error")))]
    for node_id, node_error in (error.get("node_errors") or {}).items():
        for problem in node_error.get("errors", []):
            parts.append(f"node {node_id} ({node_error.get('class_type')}): {problem.get('message')}: "
                         f"{problem.get('details')}")
    return "; ".join(parts)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_scratch_folders(root: pathlib.Path) -> list[pathlib.Path]:
    """Removes the scratch folders of workers that are gone (killed before they could clean up); returns them."""
    removed = []
    for folder in root.glob(SCRATCH_PREFIX + "*_*"):
        pid = folder.name[len(SCRATCH_PREFIX):].split("_", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def make_scratch_folder() -> pathlib.Path:
    """A new scratch folder named after this process, after removing those of dead workers on this machine."""
    root = pathlib.Path(tempfile.gettempdir())
    for folder in remove_stale_scratch_folders(root):
        print(f"removed the scratch folder of a worker that was killed: {folder}", flush=True)
    return pathlib.Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}_", dir=root))


class EditWorker:
    def __init__(self, options: WorkerOptions, workflow: Workflow, session: ComfySession | None = None) -> None:
        self.options, self.workflow = options, workflow
        self.scratch = make_scratch_folder()
        self.input_dir = self.scratch / "input"
        self._staged: set[str] = set()
        try:
            self._boot(session)
        except BaseException:  # a worker that cannot start leaves no scratch behind (the self-check's weights)
            self.close()
            raise

    def _boot(self, session: ComfySession | None) -> None:
        options, workflow = self.options, self.workflow
        if session is None:
            session = ComfySession(options.comfyui, output_dir=self.scratch / "output",
                                   input_dir=self.scratch / "input", temp_dir=self.scratch / "temp", cpu=options.cpu)
            if not session.pack_loaded:
                raise WorkerStartError("LMM Edit failed to load as a ComfyUI custom node (see the log above)")
            import comfy.utils

            comfy.utils.set_progress_bar_enabled(False)  # the batch's own bar counts items; no per-step bars
        self.session = session
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        if options.models_dir:
            add_models_dir(session, options.models_dir)
        if options.self_check:
            self._install_self_check_models()
        graph = workflow.graph
        self.prompt = session.ui_to_api(graph) if is_ui_format(graph) else graph
        check_prompt(self.prompt, workflow.roles)
        self.input_dir = pathlib.Path(session.folder_paths.get_input_directory())
        self._metric_models = None

    def _install_self_check_models(self) -> None:
        from ..edit import _write_self_check_models

        if self.workflow.job is None:
            raise WorkflowError("--self-check runs the example workflows only (their tiny model files are known)")
        for category, folder in _write_self_check_models(self.workflow.job, self.scratch / "models").items():
            self.session.folder_paths.add_model_folder_path(category, str(folder), is_default=True)

    def metric_models(self):
        if self._metric_models is None:
            import torch

            from .metric_models import load_metric_models

            device = torch.device("cpu" if self.options.cpu else "cuda")
            roots = self.session.folder_paths.get_folder_paths(model_folders.CLIP_VISION)
            self._metric_models = load_metric_models(roots, self.options.clip_name, device)
        return self._metric_models

    def _stage(self, inputs: ItemInputs) -> None:
        """The item's pictures in ComfyUI's input folder under their content names (same name: cache hit);
        the previous item's other pictures are removed, so the folder never grows."""
        wanted = {inputs.image_name: inputs.image}
        if inputs.mask is not None:
            wanted[inputs.mask_name] = inputs.mask
        for name in self._staged - set(wanted):
            (self.input_dir / name).unlink(missing_ok=True)
        for name, data in wanted.items():
            if not (self.input_dir / name).is_file():
                (self.input_dir / name).write_bytes(data)
        self._staged = set(wanted)

    def _take_outputs(self, outputs: dict) -> bytes:
        """The output node's picture; every file the run saved is removed from the scratch folders."""
        png = None
        for node_id, ui in outputs.items():
            for image in ui.get("images", []):
                path = (pathlib.Path(self.session.folder_paths.get_directory_by_type(image["type"]))
                        / image["subfolder"] / image["filename"])
                if node_id == self.workflow.roles.output and png is None:
                    png = path.read_bytes()
                path.unlink(missing_ok=True)
        if png is None:
            raise WorkflowError(f"the output node {self.workflow.roles.output} saved no image")
        return png

    def run(self, inputs: ItemInputs) -> ItemResult:
        item = inputs.item
        start = time.perf_counter()
        record = dict(id=item.id, hash=inputs.hash, type=item.type, instruction=item.instruction, seed=item.seed,
                      worker=self.name)
        try:
            self._stage(inputs)
            prompt = apply_item(self.prompt, self.workflow.roles, image=inputs.image_name, mask=inputs.mask_name,
                                instruction=item.instruction, seed=item.seed, steps=self.options.steps,
                                output_prefix=OUTPUT_PREFIX)
            result = self.session.run(prompt)
            if not result.success:
                return ItemResult(dict(record, status=FAILED, seconds=time.perf_counter() - start,
                                       error=error_message(result.error)))
            png = self._take_outputs(result.outputs)
            answer, tokens = lmm_status(result.outputs, prompt)
            record.update(lmm_answer=answer, token_status=tokens)
            if self.options.metrics:
                record["metrics"] = self._metrics(inputs, png)
        except (WorkflowError, OSError, ValueError, RuntimeError) as error:  # torch: RuntimeError for bad tensors
            return ItemResult(dict(record, status=FAILED, seconds=time.perf_counter() - start, error=str(error)))
        return ItemResult(dict(record, status=DONE, seconds=time.perf_counter() - start), png)

    def _metrics(self, inputs: ItemInputs, png: bytes) -> dict:
        from .metrics import edit_metrics, open_mask, open_rgb

        item = inputs.item
        return edit_metrics(open_rgb(png), open_rgb(inputs.image),
                            target=open_rgb(inputs.target) if inputs.target is not None else None,
                            mask=open_mask(inputs.mask) if inputs.mask is not None else None,
                            caption=item.target_caption, models=self.metric_models(),
                            size=self.options.metrics_size or None)

    def close(self) -> None:
        for name in self._staged:
            (self.input_dir / name).unlink(missing_ok=True)
        shutil.rmtree(self.scratch, ignore_errors=True)
