"""download / doctor with ComfyUI's own folder resolution, and the loader nodes' hints for empty folders.

The commands run as a user runs them (``main([...])`` of ``python -m lmm_edit`` in a fresh interpreter) against
the real ComfyUI in COMFYUI_PATH, with ``--base-directory`` and an ``extra_model_paths.yaml`` in a temp folder,
and a fake Hub on 127.0.0.1 as HF_ENDPOINT. Nothing is written into the ComfyUI checkout.
"""

from __future__ import annotations

import os

import pytest
from fake_hub import FakeHub

from lmm_edit.loaders import model_folders as mf
from lmm_edit.loaders.model_catalogue import LOADER_WIDGETS, fetch_hint
from pack_process import run_with_pack

RUN_MAIN = "from lmm_edit.__main__ import main; raise SystemExit(main(sys.argv[1:]))"


@pytest.fixture
def user_setup(tmp_path):
    comfyui = os.environ.get("COMFYUI_PATH")
    if not comfyui:
        pytest.skip("COMFYUI_PATH is unset")
    elsewhere = tmp_path / "big_disk"
    yaml = tmp_path / "extra_model_paths.yaml"
    yaml.write_text(f"mine:\n  base_path: {elsewhere}\n  is_default: true\n  clip_vision: clip\n  checkpoints: ckpt\n")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_DISABLE_XET": "1"}
    env.pop("HF_TOKEN", None)
    args = ["--comfyui", comfyui, "--base-directory", str(tmp_path / "base"), "--extra-model-paths-config", str(yaml)]
    return tmp_path, elsewhere, env, args


def test_download_goes_to_the_folder_extra_model_paths_makes_default(user_setup):
    tmp_path, elsewhere, env, args = user_setup
    files = {"model.safetensors": os.urandom(4096), "config.json": b"{}"}
    with FakeHub({"openai/clip-vit-large-patch14": files}) as hub:
        done = run_with_pack(RUN_MAIN, "download", "clip-vit-l", *args, env={**env, "HF_ENDPOINT": hub.url})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (elsewhere / "clip" / "clip-vit-large-patch14" / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert not (tmp_path / "base" / "models" / "clip_vision" / "clip-vit-large-patch14").exists()


def test_list_shows_the_resolved_folders(user_setup):
    tmp_path, elsewhere, env, args = user_setup
    done = run_with_pack(RUN_MAIN, "download", "--list", *args, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert str(elsewhere / "ckpt" / "instruct-pix2pix-00-22000.safetensors") in done.stdout
    assert str(tmp_path / "base" / "models" / "lmm_edit" / "smartedit" / "SmartEdit-7B") in done.stdout


def test_doctor_reports_present_and_missing_with_commands(user_setup):
    tmp_path, elsewhere, env, args = user_setup
    (elsewhere / "ckpt").mkdir(parents=True)
    (elsewhere / "ckpt" / "instruct-pix2pix-00-22000.safetensors").write_bytes(b"w")
    done = run_with_pack(RUN_MAIN, "doctor", "--workflow", "smartedit", *args, env=env)
    assert done.returncode == 1, done.stderr[-3000:]  # something is missing
    assert "smartedit.json: 1 of 4 model files present" in done.stdout
    assert f"present  checkpoints/instruct-pix2pix-00-22000.safetensors  ({elsewhere / 'ckpt'}" in done.stdout
    assert "get it: python -m lmm_edit download smartedit-7b" in done.stdout
    ip2p = run_with_pack(RUN_MAIN, "doctor", "--workflow", "instructpix2pix", *args, env=env)
    assert ip2p.returncode == 0 and "1 of 1 model files present" in ip2p.stdout


def test_loader_widget_positions_match_the_node_schemas(comfyui):
    for widget in LOADER_WIDGETS:
        info = comfyui.node_info(widget.node_type)
        name = info["input_order"]["required"][widget.index]
        spec = info["input"]["required"][name]
        assert spec[0] == "COMBO" or isinstance(spec[0], list), (widget, name, spec)


def test_an_empty_bundle_folder_shows_and_raises_the_download_command(comfyui, tmp_path, monkeypatch):
    empty = tmp_path / "empty_smartedit"
    empty.mkdir()
    monkeypatch.setitem(comfyui.folder_paths.folder_names_and_paths, mf.SMARTEDIT,
                        ([str(empty)], set(comfyui.folder_paths.supported_pt_extensions)))
    options = comfyui.node_info("LMMEdit_SmartEditLoader")["input"]["required"]["bundle"][1]["options"]
    assert options == [fetch_hint(mf.SMARTEDIT)]
    # ComfyUI 0.3.64 validates only V1 combos, so the example's value reaches the node, whose error names the command.
    loader = {"class_type": "LMMEdit_SmartEditLoader", "inputs": {
        "bundle": "SmartEdit-7B", "llava": "LLaVA-7B-v1", "clip_vision": "clip-vit-large-patch14/model.safetensors",
        "dtype": "auto", "qformer_heads": 0}}
    comfyui.executor.reset()  # an earlier test may have run this loader with these inputs: no cached output
    result = comfyui.run({"1": loader, "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}}})
    assert not result.success
    assert "Get it with: python -m lmm_edit download smartedit-7b" in result.error["exception_message"]


def test_a_missing_adapter_file_error_names_its_download(comfyui, tmp_path, monkeypatch):
    empty = tmp_path / "empty_ipadapter"  # earlier tests may have put this file in a registered folder
    empty.mkdir()
    monkeypatch.setitem(comfyui.folder_paths.folder_names_and_paths, mf.IPADAPTER,
                        ([str(empty)], set(comfyui.folder_paths.supported_pt_extensions)))
    node = comfyui.nodes.NODE_CLASS_MAPPINGS["LMMEdit_AdapterLoader"]
    with pytest.raises(FileNotFoundError, match="python -m lmm_edit download ip-adapter-sd15"):
        node.execute(adapter_name="ip-adapter_sd15.safetensors")
