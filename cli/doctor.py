"""``python -m lmm_edit doctor [--workflow ...]``: every model file an example workflow needs, present or missing.

For each file or folder a loader node names: where it is (or where it belongs: the category's first folder,
as ComfyUI resolves it, ``extra_model_paths.yaml`` included) and the command that fetches it.
``--write-properties`` regenerates the ``properties.models`` entries of the example workflows from the catalogue
(what ComfyUI's frontend reads to list missing models).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from dataclasses import dataclass

from ..loaders.model_catalogue import frontend_models, how_to_get, workflow_needs
from .comfy_session import PACK_DIR, ComfyUINotFound
from .download_command import add_folder_arguments, model_folders_from
from .model_paths import ModelFolders

WORKFLOWS_DIR = PACK_DIR / "example_workflows"


@dataclass(frozen=True)
class Need:
    node_title: str
    category: str
    name: str
    found: pathlib.Path | None
    belongs: pathlib.Path
    fetch: str


def check_workflow(workflow: dict, folders: ModelFolders) -> list[Need]:
    needs = []
    for node, widget, value in workflow_needs(workflow):
        title = node.get("title") or node["type"]
        needs.append(Need(title, widget.category, value, folders.find(widget.category, value),
                          folders.destination(widget.category, value), how_to_get(widget.category, value)))
    return needs


def report(name: str, needs: list[Need]) -> list[str]:
    missing = sum(n.found is None for n in needs)
    lines = [f"{name}: {len(needs) - missing} of {len(needs)} model files present"]
    for need in needs:
        if need.found is not None:
            lines.append(f"  present  {need.category}/{need.name}  ({need.found})")
        else:
            lines.append(f"  MISSING  {need.category}/{need.name}  for {need.node_title}; belongs at {need.belongs}")
            lines.append(f"           get it: {need.fetch}")
    return lines


def example_workflows(selected: list[str]) -> list[pathlib.Path]:
    if not selected:
        return sorted(WORKFLOWS_DIR.glob("*.json"))
    paths = []
    for item in selected:
        path = pathlib.Path(item)
        if not path.is_file():
            path = WORKFLOWS_DIR / (item if item.endswith(".json") else f"{item}.json")
        if not path.is_file():
            raise FileNotFoundError(f"no workflow {item!r}: give a path or one of "
                                    f"{[p.stem for p in sorted(WORKFLOWS_DIR.glob('*.json'))]}")
        paths.append(path)
    return paths


def write_properties(path: pathlib.Path) -> bool:
    """Sets each loader node's ``properties.models`` from the catalogue; returns whether the file changed."""
    text = path.read_text()
    workflow = json.loads(text)
    for node in workflow["nodes"]:
        models = frontend_models(node)
        properties = node.setdefault("properties", {})
        if models:
            properties["models"] = models
        else:
            properties.pop("models", None)
    new = json.dumps(workflow, indent=1)  # the layout the example files already have
    if new != text:
        path.write_text(new)
    return new != text


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmm_edit doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--workflow", action="append", default=[],
                        help="an example workflow name (smartedit) or a workflow .json (default: every example)")
    parser.add_argument("--write-properties", action="store_true",
                        help="regenerate properties.models of the example workflows from the catalogue and exit")
    add_folder_arguments(parser)
    args = parser.parse_args(argv)
    try:
        paths = example_workflows(args.workflow)
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 2
    if args.write_properties:
        for path in paths:
            print(f"{'updated' if write_properties(path) else 'unchanged'}: {path.name}")
        return 0
    try:
        folders = model_folders_from(args)
    except ComfyUINotFound as err:
        print(err, file=sys.stderr)
        return 2
    all_present = True
    for path in paths:
        needs = check_workflow(json.loads(path.read_text()), folders)
        all_present &= all(n.found is not None for n in needs)
        print("\n".join(report(path.name, needs)))
    return 0 if all_present else 1
