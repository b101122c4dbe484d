"""convert-smartedit refuses what would lose or mix data, and says what to do; the reader refuses mixed bundles."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmm_edit.__main__ import main as cli_main
from lmm_edit.loaders.errors import ModelFileError
from lmm_edit.loaders.smartedit import find_bundle, load_smartedit
from lmm_edit.loaders.smartedit.convert import convert_smartedit


def _copy_bundle(fixture, tmp_path):
    src = tmp_path / "SmartEdit-7B"
    shutil.copytree(fixture.bundle, src)
    return src


@pytest.mark.parametrize("where", ["the source", "inside the source", "a parent of the source"])
def test_converting_into_the_source_is_refused(fixture, tmp_path, where):
    src = _copy_bundle(fixture, tmp_path)
    dst = {"the source": src, "inside the source": src / "converted", "a parent of the source": tmp_path}[where]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ModelFileError) as err:
        convert_smartedit(src, dst)
    assert err.value.file == str(dst) and "overlaps the source" in err.value.found
    assert "SmartEdit-7B-converted" in err.value.fix
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_destination_that_is_a_file_is_refused(fixture, tmp_path, capsys):
    dst = tmp_path / "conv"
    dst.write_text("notes")
    assert cli_main(["convert-smartedit", str(fixture.bundle), str(dst)]) == 1
    message = capsys.readouterr().err
    assert str(dst) in message and "found a file" in message and "choose another output folder" in message
    assert dst.read_text() == "notes"


def test_a_destination_under_a_file_is_a_clear_error(fixture, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelFileError) as err:
        convert_smartedit(fixture.bundle, tmp_path / "file" / "conv")
    assert str(tmp_path / "file" / "conv") in str(err.value) and "writable folder" in err.value.expected


def test_a_destination_holding_other_files_is_not_replaced(fixture, tmp_path):
    dst = tmp_path / "conv"
    dst.mkdir()
    (dst / "my_lora.safetensors").write_bytes(b"mine")
    with pytest.raises(ModelFileError) as err:
        convert_smartedit(fixture.bundle, dst)
    assert "my_lora.safetensors" in err.value.found and "new folder" in err.value.fix
    assert sorted(p.name for p in dst.iterdir()) == ["my_lora.safetensors"]


def test_the_reader_refuses_files_of_two_conversions(fixture, tmp_path):
    convert_smartedit(fixture.bundle, tmp_path / "a")
    convert_smartedit(fixture.bundle, tmp_path / "b", "fp16")
    shutil.copy(tmp_path / "b" / "bim.safetensors", tmp_path / "a" / "bim.safetensors")
    with pytest.raises(ModelFileError) as err:
        load_smartedit(tmp_path / "a", fixture.llava, fixture.clip, tokenizer_path=fixture.tokenizer)
    found = err.value.found
    assert err.value.file == str(tmp_path / "a") and found.startswith("a mix")
    assert "bim.safetensors from" in found and "llm.safetensors, embeddings_qformer.safetensors, unet.safetensors" in found
    assert "convert the release bundle again" in err.value.fix


def test_the_reader_refuses_files_of_two_sources(fixture, tmp_path):
    other = _copy_bundle(fixture, tmp_path)
    convert_smartedit(fixture.bundle, tmp_path / "a")
    convert_smartedit(other, tmp_path / "b")
    shutil.copy(tmp_path / "b" / "unet.safetensors", tmp_path / "a" / "unet.safetensors")
    with pytest.raises(ModelFileError, match=rf"unet.safetensors from {other}"):
        find_bundle(tmp_path / "a")


def test_the_reader_refuses_a_component_under_another_name(fixture, tmp_path):
    dst = tmp_path / "conv"
    convert_smartedit(fixture.bundle, dst)
    shutil.copy(dst / "unet.safetensors", dst / "bim.safetensors")
    with pytest.raises(ModelFileError) as err:
        find_bundle(dst)
    assert err.value.file == str(dst / "bim.safetensors") and '"component": \'unet\'' in err.value.found


def _bundle_with_a_large_bim_value(fixture, tmp_path, value: float):
    src = _copy_bundle(fixture, tmp_path)
    path = src / "modulate-15000" / "adapter_model.safetensors"
    state = load_file(path)
    key = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 2)
    state[key] = state[key].clone()
    state[key][0, 0] = value
    path.chmod(0o644)
    save_file(state, path)
    return src, key


def test_an_fp16_conversion_of_values_beyond_its_range_is_refused(fixture, tmp_path, capsys):
    src, key = _bundle_with_a_large_bim_value(fixture, tmp_path, 1.0e6)
    dst = tmp_path / "half"
    assert cli_main(["convert-smartedit", str(src), str(dst), "--dtype", "fp16"]) == 1
    message = capsys.readouterr().err
    assert "adapter_model.safetensors" in message and key in message and "1e+06" in message
    assert "--clamp" in message and "bf16" in message
    assert not dst.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["SmartEdit-7B"]


def test_clamp_clips_values_beyond_the_fp16_range(fixture, tmp_path):
    src, key = _bundle_with_a_large_bim_value(fixture, tmp_path, -1.0e6)
    assert cli_main(["convert-smartedit", str(src), str(tmp_path / "half"), "--dtype", "fp16", "--clamp"]) == 0
    converted = load_file(tmp_path / "half" / "bim.safetensors")
    assert converted[key][0, 0].item() == -65504.0 and all(t.isfinite().all() for t in converted.values())
    assert converted[key].dtype == torch.float16


def test_a_bf16_conversion_keeps_large_values(fixture, tmp_path):
    src, key = _bundle_with_a_large_bim_value(fixture, tmp_path, 1.0e6)
    convert_smartedit(src, tmp_path / "b", "bf16")
    assert load_file(tmp_path / "b" / "bim.safetensors")[key][0, 0].item() == pytest.approx(1.0e6, rel=1e-2)
