"""Each batch item's files are checked on the driver; the command refuses bad setups before booting ComfyUI."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from lmm_edit.__main__ import main
from lmm_edit.cli.batch.inputs import ItemInputError, read_inputs
from lmm_edit.cli.batch.manifest import Item


def _png(path, size=(40, 30)):
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(path)
    return str(path)


def test_a_mask_of_another_size_fails_the_item_naming_both_sizes(tmp_path):
    item = Item(id="a", image=_png(tmp_path / "a.png"), instruction="x", mask=_png(tmp_path / "m.png", (20, 20)))
    with pytest.raises(ItemInputError, match="is 20x20 but the image is 40x30"):
        read_inputs(item, "h", with_target=False)


def test_an_unreadable_image_fails_the_item(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not a picture")
    with pytest.raises(ItemInputError, match="is not a readable image"):
        read_inputs(Item(id="a", image=str(tmp_path / "a.png"), instruction="x"), "h", with_target=False)


def test_a_missing_target_fails_the_item_only_when_metrics_need_it(tmp_path):
    item = Item(id="a", image=_png(tmp_path / "a.png"), instruction="x", target_image=str(tmp_path / "gone.png"))
    assert read_inputs(item, "h", with_target=False).target is None
    with pytest.raises(ItemInputError, match="target_image .*gone.png does not exist"):
        read_inputs(item, "h", with_target=True)


def test_the_same_picture_keeps_the_same_input_name(tmp_path):
    first = read_inputs(Item(id="a", image=_png(tmp_path / "a.png"), instruction="x"), "h", with_target=False)
    again = read_inputs(Item(id="b", image=_png(tmp_path / "b.png"), instruction="y"), "h", with_target=False)
    other = read_inputs(Item(id="c", image=_png(tmp_path / "c.png", (41, 30)), instruction="x"), "h", False)
    assert first.image_name == again.image_name != other.image_name


def test_workers_without_ray_are_refused(tmp_path, capsys):
    assert main(["batch", "--workflow", "instructpix2pix", "--manifest", "m.jsonl", "--out", str(tmp_path),
                 "--workers", "2"]) == 2
    assert "add --ray" in capsys.readouterr().err


def test_a_bad_manifest_stops_the_command_with_its_line(tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "image": "a.png"}) + "\n")
    assert main(["batch", "--workflow", "instructpix2pix", "--manifest", str(manifest), "--out", str(tmp_path)]) == 2
    assert "line 1: missing 'instruction'" in capsys.readouterr().err


def test_a_user_workflow_without_the_titles_stops_the_command(tmp_path, capsys):
    workflow = tmp_path / "w.json"
    workflow.write_text(json.dumps({"1": {"class_type": "CLIPTextEncode", "inputs": {"text": ""},
                                          "_meta": {"title": "Prompt"}}}))
    assert main(["batch", "--workflow", str(workflow), "--manifest", "m.jsonl", "--out", str(tmp_path)]) == 2
    assert "no node is titled 'Input image'" in capsys.readouterr().err


def test_ray_missing_is_reported_at_the_start_with_the_extra_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as when it is not installed
    assert main(["batch", "--workflow", "instructpix2pix", "--manifest", "m.jsonl", "--out", str(tmp_path),
                 "--ray", "local"]) == 2
    assert "pip install 'lmm-edit[scale]'" in capsys.readouterr().err
