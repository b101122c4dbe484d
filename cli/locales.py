"""Writes locales/en/nodeDefs.json from the nodes' own schemas (the one place tooltips live)."""

from __future__ import annotations

import json
import pathlib

LOCALE_FILE = pathlib.Path(__file__).resolve().parent.parent / "locales" / "en" / "nodeDefs.json"


def node_defs_from_info(infos: dict[str, dict]) -> dict:
    """The frontend's nodeDefs layout from /object_info entries of our nodes."""
    out = {}
    for node_id, info in sorted(infos.items()):
        inputs = {}
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                options = spec[1] if len(spec) > 1 else {}
                inputs[name] = {"name": options.get("display_name", name), "tooltip": options.get("tooltip", "")}
        tooltips = info.get("output_tooltips") or [None] * len(info["output"])
        outputs = {
            str(i): {"name": name, **({"tooltip": tip} if tip else {})}
            for i, (name, tip) in enumerate(zip(info["output_name"], tooltips))
        }
        out[node_id] = {"display_name": info["display_name"], "description": info.get("description", ""),
                        "inputs": inputs, "outputs": outputs}
    return out


def write_node_defs(session) -> pathlib.Path:
    infos = {node_id: session.node_info(node_id) for node_id in session.pack_node_ids}
    LOCALE_FILE.parent.mkdir(parents=True, exist_ok=True)
    LOCALE_FILE.write_text(json.dumps(node_defs_from_info(infos), indent=2, ensure_ascii=False) + "\n")
    return LOCALE_FILE
