"""The edit command's jobs agree with their example workflows; --audio and missing files fail before ComfyUI boots."""

from __future__ import annotations

import json

import pytest

from lmm_edit.__main__ import main
from lmm_edit.cli.edit import JOBS, WORKFLOWS_DIR
from lmm_edit.loaders import model_folders


def _nodes(job) -> list[dict]:
    return json.loads((WORKFLOWS_DIR / job.workflow).read_text())["nodes"]


@pytest.mark.parametrize("name", sorted(JOBS))
def test_every_node_type_the_job_sets_is_in_its_workflow(name):
    job = JOBS[name]
    types = {node["type"] for node in _nodes(job)}
    named = [job.instruction[0], *(t for t, _ in job.steps), *(t for t, _ in job.seeds),
             *(t for t, _, _ in job.self_check_inputs)] + ([job.audio[0]] if job.audio else [])
    assert set(named) <= types, f"{job.workflow} has no {set(named) - types}"


def test_the_any2pix_job_needs_exactly_what_its_workflow_loads():
    job = JOBS["any2pix"]
    values = {node["type"]: node["widgets_values"] for node in _nodes(job)}
    release = {need.name for need in job.needs if need.folder == model_folders.ANY2PIX and need.is_folder}
    (folder,) = release
    assert all(value.startswith(folder + "/") for value in values["LMMEdit_Any2PixLoader"][:3])
    needs = {(need.folder, need.name) for need in job.needs}
    assert (model_folders.CHECKPOINTS, values["CheckpointLoaderSimple"][0]) in needs
    assert (model_folders.IPADAPTER, values["LMMEdit_AdapterLoader"][0]) in needs
    assert (model_folders.ANY2PIX, values["LMMEdit_Any2PixLoader"][1]) in needs  # ImageBind, inside the release


def test_audio_for_a_workflow_without_sound_is_refused(capsys):
    assert main(["edit", "--workflow", "instructpix2pix", "--audio", "clock.wav"]) == 2
    assert "takes no sound" in capsys.readouterr().err


def test_a_missing_input_file_is_named(tmp_path, capsys):
    missing = tmp_path / "nowhere.wav"
    assert main(["edit", "--workflow", "any2pix", "--audio", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
