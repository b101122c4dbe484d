"""The command line without ComfyUI: usage, and a clear error naming COMFYUI_PATH."""

from __future__ import annotations

import sys

import pytest

from lmm_edit.__main__ import main
from lmm_edit.cli.comfy_session import ComfyUINotFound, find_comfyui
from lmm_edit.cli.edit import set_inputs
from lmm_edit.cli.locales import node_defs_from_info


def test_no_command_prints_usage_and_fails(capsys):
    assert main([]) == 2
    assert "edit" in capsys.readouterr().out


def test_edit_without_comfyui_says_how_to_point_at_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path / "nowhere"))
    assert main(["edit"]) == 2
    err = capsys.readouterr().err
    assert "COMFYUI_PATH" in err and "nowhere" in err and "comfy-cli" in err


def test_find_comfyui_accepts_a_checkout(tmp_path):
    (tmp_path / "comfy").mkdir()
    (tmp_path / "nodes.py").write_text("")
    assert find_comfyui(str(tmp_path)) == tmp_path.resolve()
    with pytest.raises(ComfyUINotFound, match="main.py and nodes.py"):
        find_comfyui(str(tmp_path / "comfy"))


def test_set_inputs_targets_nodes_by_type_and_title():
    prompt = {
        "1": {"class_type": "CLIPTextEncode", "inputs": {"text": "a"}, "_meta": {"title": "Instruction"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": ""}, "_meta": {"title": "Null text"}},
    }
    assert set_inputs(prompt, "CLIPTextEncode", title="Instruction", text="make it red") == 1
    assert prompt["1"]["inputs"]["text"] == "make it red" and prompt["2"]["inputs"]["text"] == ""


def test_locale_entries_follow_the_frontend_node_defs_layout():
    info = {"LMMEdit_X": {
        "input": {"required": {"model": ["MODEL", {"tooltip": "the model"}]}, "optional": {}},
        "output": ["GUIDER"], "output_name": ["GUIDER"], "output_tooltips": ["for sampling"],
        "display_name": "X", "description": "does x",
    }}
    assert node_defs_from_info(info) == {"LMMEdit_X": {
        "display_name": "X", "description": "does x",
        "inputs": {"model": {"name": "model", "tooltip": "the model"}},
        "outputs": {"0": {"name": "GUIDER", "tooltip": "for sampling"}},
    }}


def test_converting_a_workflow_without_comfy_cli_names_the_extra(monkeypatch):
    from lmm_edit.cli.comfy_session import ComfySession

    monkeypatch.setitem(sys.modules, "comfy_cli.workflow_to_api", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"lmm-edit\[cli\]"):
        ComfySession.ui_to_api(object(), {"nodes": [], "links": []})
