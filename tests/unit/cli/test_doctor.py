"""doctor and the example workflows' ``properties.models``, both derived from the model catalogue."""

from __future__ import annotations

import json

import pytest

from lmm_edit.cli.doctor import WORKFLOWS_DIR, check_workflow, report, write_properties
from lmm_edit.cli.model_paths import ModelFolders
from lmm_edit.loaders import model_folders as mf
from lmm_edit.loaders.model_catalogue import (
    DOWNLOADS,
    FRONTEND_SUFFIXES,
    LOADER_WIDGETS,
    fetch_hint,
    frontend_models,
    how_to_get,
)

WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.json"))
CORE_CATEGORIES = {mf.CHECKPOINTS, mf.CLIP_VISION}


def folders_under(root) -> ModelFolders:
    categories = set(mf.PACK_FOLDERS) | CORE_CATEGORIES
    return ModelFolders({c: [str(root / "models" / mf.PACK_FOLDERS.get(c, c)), str(root / "extra" / c)]
                         for c in categories})


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_model_metadata_is_what_the_catalogue_generates(path):
    workflow = json.loads(path.read_text())
    for node in workflow["nodes"]:
        assert node.get("properties", {}).get("models", []) == frontend_models(node), (
            f"{path.name} node {node['id']}: run python -m lmm_edit doctor --write-properties")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_model_entries_pass_the_frontend_download_rules(path):
    # ComfyUI_frontend 1.27 MissingModelsWarning: https://huggingface.co/ or civitai URLs, .safetensors/.sft names,
    # and the entry's name must be one of the node's widget values (getSelectedModelsMetadata).
    for node in json.loads(path.read_text())["nodes"]:
        for model in node.get("properties", {}).get("models", []):
            assert model["url"].startswith("https://huggingface.co/") and "/resolve/" in model["url"]
            assert model["name"].endswith(FRONTEND_SUFFIXES) and model["name"] in node["widgets_values"]
            assert model["directory"] in set(mf.PACK_FOLDERS) | CORE_CATEGORIES


def test_write_properties_is_stable_on_the_committed_files(tmp_path):
    for path in WORKFLOWS:
        copy = tmp_path / path.name
        copy.write_text(path.read_text())
        assert write_properties(copy) is False


def test_doctor_on_empty_folders_names_every_missing_file_and_its_command(tmp_path):
    workflow = json.loads((WORKFLOWS_DIR / "smartedit.json").read_text())
    needs = check_workflow(workflow, folders_under(tmp_path))
    assert {(n.category, n.name) for n in needs} == {
        (mf.SMARTEDIT, "SmartEdit-7B"), (mf.LLAVA, "LLaVA-7B-v1"),
        (mf.CLIP_VISION, "clip-vit-large-patch14/model.safetensors"),
        (mf.CHECKPOINTS, "instruct-pix2pix-00-22000.safetensors")}
    text = "\n".join(report("smartedit.json", needs))
    assert "0 of 4 model files present" in text
    for command in ("download smartedit-7b", "download clip-vit-l", "download instructpix2pix",
                    "download llava-7b-delta, then python -m lmm_edit prepare-llava"):
        assert command in text
    assert str(tmp_path / "models" / "lmm_edit" / "smartedit" / "SmartEdit-7B") in text  # first folder of the category


def test_doctor_finds_files_in_any_folder_of_the_category(tmp_path):
    extra = tmp_path / "extra" / mf.CHECKPOINTS
    extra.mkdir(parents=True)
    (extra / "instruct-pix2pix-00-22000.safetensors").write_bytes(b"w")
    workflow = json.loads((WORKFLOWS_DIR / "instructpix2pix.json").read_text())
    (need,) = check_workflow(workflow, folders_under(tmp_path))
    assert need.found == extra / "instruct-pix2pix-00-22000.safetensors"
    assert "1 of 1 model files present" in report("instructpix2pix.json", [need])[0]


def test_a_file_without_public_weights_says_so():
    assert "no download known" in how_to_get(mf.IPADAPTER, "insightedit_iaa_sd15.safetensors")


def test_empty_folder_hints_name_the_commands_that_fill_them():
    assert fetch_hint(mf.SMARTEDIT) == ("(empty: python -m lmm_edit download smartedit-7b or "
                                        "python -m lmm_edit download smartedit-13b)")
    assert "prepare-llava" in fetch_hint(mf.LLAVA) and "download llava-7b-delta" in fetch_hint(mf.LLAVA)
    assert "download ip-adapter-sd15" in fetch_hint(mf.IPADAPTER)
    assert fetch_hint(mf.MLLM).startswith("(empty: put the files into")


def test_every_loader_widget_category_is_a_known_folder():
    assert {w.category for w in LOADER_WIDGETS} <= set(mf.PACK_FOLDERS) | CORE_CATEGORIES
    assert {f.category for d in DOWNLOADS.values() for f in d.files} <= set(mf.PACK_FOLDERS) | CORE_CATEGORIES
