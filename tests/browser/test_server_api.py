"""What the real ComfyUI server publishes about LMM Edit over HTTP (the data its frontend is built from).

Expected values come from the repository's files (node ids in nodes/*.py, example_workflows/,
locales/, web/docs/), never from importing the pack.
"""

from __future__ import annotations

import json
import re

import pytest

from .conftest import PACK_FOLDER, REPO_ROOT

pytestmark = pytest.mark.browser

NODE_ID = re.compile(r"""node_id\s*=\s*["'](LMMEdit_\w+)["']""")
JPEG_MAGIC = b"\xff\xd8\xff"


def pack_node_ids() -> set[str]:
    ids = {match for path in (REPO_ROOT / "nodes").rglob("*.py") for match in NODE_ID.findall(path.read_text())}
    assert ids, "no node_id=\"LMMEdit_...\" found in nodes/*.py"
    return ids


def test_object_info_lists_every_pack_node_under_the_lmm_edit_category(comfy_server):
    object_info = comfy_server.get_json("/api/object_info")

    missing = sorted(pack_node_ids() - set(object_info))
    assert not missing, f"nodes not registered: {missing}; server log:\n{comfy_server.log_tail()}"
    for node_id in sorted(pack_node_ids()):
        info = object_info[node_id]
        assert info["category"].startswith("lmm_edit/"), (node_id, info["category"])
        # The frontend derives the node's source badge and help-page URL from python_module.
        assert info["python_module"] == f"custom_nodes.{PACK_FOLDER}", (node_id, info["python_module"])


def test_workflow_templates_list_the_example_workflows_under_the_pack_folder(comfy_server, example_workflows):
    templates = comfy_server.get_json("/api/workflow_templates")

    assert sorted(templates.get(PACK_FOLDER, [])) == sorted(example_workflows), templates


@pytest.mark.parametrize("stem", sorted(p.stem for p in (REPO_ROOT / "example_workflows").glob("*.json")))
def test_each_example_workflow_and_its_thumbnail_are_served(comfy_server, stem):
    folder = REPO_ROOT / "example_workflows"

    status, content_type, body = comfy_server.get(f"/api/workflow_templates/{PACK_FOLDER}/{stem}.json")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == json.loads((folder / f"{stem}.json").read_text())

    status, content_type, body = comfy_server.get(f"/api/workflow_templates/{PACK_FOLDER}/{stem}.jpg")
    assert (status, content_type) == (200, "image/jpeg")
    assert body == (folder / f"{stem}.jpg").read_bytes()
    assert body.startswith(JPEG_MAGIC)


def test_i18n_serves_the_pack_locale_files(comfy_server):
    i18n = comfy_server.get_json("/i18n")

    locale_files = sorted((REPO_ROOT / "locales").glob("*/nodeDefs.json"))
    assert locale_files, "no locales/<lang>/nodeDefs.json in the repository"
    for path in locale_files:
        lang = path.parent.name
        ours = json.loads(path.read_text())
        served = i18n.get(lang, {}).get("nodeDefs", {})
        assert {node_id: served.get(node_id) for node_id in ours} == ours, lang


def test_i18n_english_node_defs_cover_every_pack_node(comfy_server):
    served = comfy_server.get_json("/i18n")["en"]["nodeDefs"]

    assert sorted(pack_node_ids() - set(served)) == []


def test_help_pages_are_served_where_the_frontend_looks_for_them(comfy_server):
    # Frontend 1.27.10 (services/nodeHelpService.ts): /extensions/<python_module pack>/docs/<NodeId>.md
    docs = sorted((REPO_ROOT / "web" / "docs").glob("*.md"))
    assert docs, "no web/docs/<NodeId>.md in the repository"
    for doc in docs:
        status, _, body = comfy_server.get(f"/extensions/{PACK_FOLDER}/docs/{doc.name}")
        assert status == 200, doc.name
        assert body == doc.read_bytes()
