"""Which workflow a batch runs, and where each item's values go in it.

A workflow is an example name (as ``python -m lmm_edit edit`` knows them) or a user's workflow JSON,
in the UI format the frontend saves or the API format ("Export (API)"). Nodes are found by title,
falling back to the node type when the graph has exactly one of it:

    Input image    LoadImage that receives the item's image             (else: the only LoadImage)
    Instruction    node whose instruction/text/prompt input gets the item's instruction
                                                                         (else: the only LMMEdit_LMMEncode)
    Mask           LoadImageMask/LoadImage that receives the item's mask (optional)
    Seed           node whose noise_seed/seed input gets the item's seed
                                                     (else: every RandomNoise, KSampler, KSamplerAdvanced)
    Output image   SaveImage whose picture is the item's result          (else: the only SaveImage)
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

from ..edit import JOBS, WORKFLOWS_DIR, EditJob

IMAGE_TITLE, INSTRUCTION_TITLE, MASK_TITLE, SEED_TITLE, OUTPUT_TITLE = (
    "Input image", "Instruction", "Mask", "Seed", "Output image")
IMAGE_TYPE, INSTRUCTION_TYPE, OUTPUT_TYPE = "LoadImage", "LMMEdit_LMMEncode", "SaveImage"
SEED_NODES = {"RandomNoise": "noise_seed", "KSampler": "seed", "KSamplerAdvanced": "noise_seed"}
STEP_NODES = ("BasicScheduler", "KSampler", "KSamplerAdvanced")
INSTRUCTION_INPUTS = ("instruction", "text", "prompt")
UI_MODES_SKIPPED = (2, 4)  # muted, bypassed: not in the API prompt


class WorkflowError(ValueError):
    pass


@dataclass(frozen=True)
class Roles:
    """API node ids (strings) of the nodes each item's values go to."""

    image: str
    instruction: str
    output: str
    mask: str | None
    seeds: tuple[str, ...]


@dataclass(frozen=True)
class Workflow:
    name: str  # the example's name or the file's path
    graph: dict  # as read: UI or API format
    job: EditJob | None  # the example's model files (for the self-check); None for a user's workflow
    roles: Roles

    @property
    def is_ui(self) -> bool:
        return is_ui_format(self.graph)


def is_ui_format(graph: dict) -> bool:
    return isinstance(graph.get("nodes"), list)


def _nodes(graph: dict) -> list[tuple[str, str, str | None]]:
    """(API node id, node type, title) of every node that the API prompt will hold."""
    if is_ui_format(graph):
        return [(str(node["id"]), node["type"], node.get("title")) for node in graph["nodes"]
                if node.get("mode", 0) not in UI_MODES_SKIPPED]
    return [(str(key), node["class_type"], node.get("_meta", {}).get("title"))
            for key, node in graph.items() if isinstance(node, dict) and "class_type" in node]


def _one(nodes, title: str, node_type: str | None, required: bool) -> str | None:
    titled = [node_id for node_id, _, node_title in nodes if node_title == title]
    if len(titled) == 1:
        return titled[0]
    typed = [node_id for node_id, kind, _ in nodes if kind == node_type] if node_type else []
    if not titled and len(typed) == 1:
        return typed[0]
    if not required and not titled:
        return None
    found = sorted({node_title for _, _, node_title in nodes if node_title})
    problem = f"{len(titled)} nodes are titled {title!r}" if titled else f"no node is titled {title!r}"
    if node_type and not titled:
        problem += f" and it has {len(typed)} {node_type} nodes (one would be used)"
    raise WorkflowError(f"{problem}. Titles found: {', '.join(map(repr, found)) or 'none'}. Give the node for "
                        f"this role the title {title!r} (right-click the node > Title in ComfyUI).")


def find_roles(graph: dict) -> Roles:
    nodes = _nodes(graph)
    seeds = _one(nodes, SEED_TITLE, None, required=False)
    return Roles(
        image=_one(nodes, IMAGE_TITLE, IMAGE_TYPE, required=True),
        instruction=_one(nodes, INSTRUCTION_TITLE, INSTRUCTION_TYPE, required=True),
        output=_one(nodes, OUTPUT_TITLE, OUTPUT_TYPE, required=True),
        mask=_one(nodes, MASK_TITLE, None, required=False),
        seeds=(seeds,) if seeds else tuple(node_id for node_id, kind, _ in nodes if kind in SEED_NODES),
    )


def load_workflow(spec: str) -> Workflow:
    """An example name or a path to a workflow JSON; raises WorkflowError saying what is wrong."""
    if spec in JOBS:
        job, path = JOBS[spec], WORKFLOWS_DIR / JOBS[spec].workflow
    else:
        job, path = None, pathlib.Path(spec)
        if not path.is_file():
            raise WorkflowError(f"--workflow {spec!r} is neither an example ({', '.join(sorted(JOBS))}) nor a file")
    try:
        graph = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise WorkflowError(f"{path}: not a workflow JSON ({error})") from error
    if not isinstance(graph, dict) or not (is_ui_format(graph) or _nodes(graph)):
        raise WorkflowError(f"{path}: expected a ComfyUI workflow (UI format with \"nodes\", or the API format "
                            "from Export (API)), found something else")
    try:
        roles = find_roles(graph)
    except WorkflowError as error:
        raise WorkflowError(f"{path}: {error}") from error
    return Workflow(name=spec, graph=graph, job=job, roles=roles)


def _string_input(node: dict, names: tuple[str, ...], node_id: str, role: str) -> str:
    for name in names:
        if isinstance(node["inputs"].get(name), str):
            return name
    raise WorkflowError(f"node {node_id} ({node['class_type']}, the {role}) has no text input named "
                        f"{' or '.join(names)} set as a widget; found inputs {sorted(node['inputs'])}")


def check_prompt(prompt: dict, roles: Roles) -> None:
    """Raises WorkflowError when the API prompt lacks a role's node or input (checked once per worker)."""
    for role, node_id in (("image", roles.image), ("instruction", roles.instruction), ("output", roles.output),
                          ("mask", roles.mask), *(("seed", s) for s in roles.seeds)):
        if node_id is not None and node_id not in prompt:
            raise WorkflowError(f"the {role} node {node_id} is not in the API prompt (is it muted or in a subgraph?)")
    _string_input(prompt[roles.instruction], INSTRUCTION_INPUTS, roles.instruction, "instruction")
    for node_id in roles.seeds:
        if not {"noise_seed", "seed"} & set(prompt[node_id]["inputs"]):
            raise WorkflowError(f"node {node_id} ({prompt[node_id]['class_type']}, the seed) has no seed input")


def apply_item(prompt: dict, roles: Roles, *, image: str, instruction: str, mask: str | None, seed: int | None,
               steps: int | None, output_prefix: str) -> dict:
    """The API prompt for one item (a copy): only the item's inputs change, so ComfyUI's cache keeps the rest."""
    prompt = json.loads(json.dumps(prompt))
    prompt[roles.image]["inputs"]["image"] = image
    node = prompt[roles.instruction]
    node["inputs"][_string_input(node, INSTRUCTION_INPUTS, roles.instruction, "instruction")] = instruction
    if roles.mask is not None:
        if mask is None:
            raise WorkflowError(f"the workflow takes a mask (node {roles.mask} titled {MASK_TITLE!r}) and this "
                                "item has none: add a 'mask' column")
        prompt[roles.mask]["inputs"]["image"] = mask
    if seed is not None:
        for node_id in roles.seeds:
            inputs = prompt[node_id]["inputs"]
            inputs["noise_seed" if "noise_seed" in inputs else "seed"] = seed
    if steps is not None:
        for node in prompt.values():
            if node["class_type"] in STEP_NODES:
                node["inputs"]["steps"] = steps
    prompt[roles.output]["inputs"]["filename_prefix"] = output_prefix
    return prompt
