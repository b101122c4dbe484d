"""``python -m lmm_edit batch`` through real ComfyUI: in process, killed and resumed, and on a local Ray cluster.

Items run the example workflows on tiny random weights (the self-check's), 64 x 48 pictures, few steps.
One item of each manifest is broken on purpose (its image file is not a picture): it must be recorded
with its message while the others are done.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from PIL import Image

from lmm_edit.cli.batch.worker import SCRATCH_PREFIX
from pack_process import _ALIAS, ROOT, run_with_pack
from tiny_clip import write_tiny_clip

WIDTH, HEIGHT = 64, 48
BROKEN = "i4"
GOOD = ["i1", "i2", "i3", "i5", "i6"]
STEPS = "2"
KILL_WITHIN_S = 1200  # boot + two items; a 2-core machine shared with other suites needed over 600


def _picture(path, seed):
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    phase = np.random.default_rng(seed).uniform(0, 6, 3)
    rgb = np.stack([127 + 100 * np.sin(x / 7.0 + phase[0]), 127 + 100 * np.cos(y / 5.0 + phase[1]),
                    127 + 60 * np.sin((x + y) / 9.0 + phase[2])], -1)
    Image.fromarray(rgb.astype("uint8")).save(path)
    return path.name


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Six items: i1/i2 differ only in seed, i3 has mask, target and caption, i4's image is not a picture."""
    folder = tmp_path_factory.mktemp("manifest")
    names = [_picture(folder / f"p{i}.png", i) for i in range(4)]
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[10:30, 20:44] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    (folder / "broken.png").write_bytes(b"this is not a PNG")
    rows = [
        dict(id="i1", image=names[0], instruction="make it red", seed=1, type="color"),
        dict(id="i2", image=names[0], instruction="make it red", seed=2, type="color"),
        dict(id="i3", image=names[1], instruction="make it blue", seed=3, mask="mask.png", target_image=names[2],
             target_caption="a blue picture", type="color"),
        dict(id=BROKEN, image="broken.png", instruction="make it green", seed=4),
        dict(id="i5", image=names[2], instruction="add snow", seed=5, target_image=names[3], type="weather"),
        dict(id="i6", image=names[3], instruction="add rain", seed=6, type="weather"),
    ]
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _results(out) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _check_outcome(out, records, ids=GOOD):
    latest = {record["id"]: record for record in records}
    assert latest[BROKEN]["status"] == "failed"
    assert "is not a readable image" in latest[BROKEN]["error"]
    for item_id in ids:
        assert latest[item_id]["status"] == "done", latest[item_id]
        edited = np.asarray(Image.open(out / latest[item_id]["output"]).convert("RGB"))
        assert edited.shape == (HEIGHT, WIDTH, 3)
    return latest


# --- in process, on the session's ComfyUI ------------------------------------------------------------


@pytest.fixture(scope="module")
def self_check_models(comfyui, tmp_path_factory):
    """The edit command's tiny SmartEdit files (and IP2P checkpoint), after the session's own folders."""
    from lmm_edit.cli.edit import JOBS, _write_self_check_models

    for category, folder in _write_self_check_models(JOBS["smartedit"], tmp_path_factory.mktemp("tiny")).items():
        comfyui.folder_paths.add_model_folder_path(category, str(folder))


def _run_in_process(comfyui, workflow_name, manifest, out, **options):
    from lmm_edit.cli.batch.command import run_batch
    from lmm_edit.cli.batch.local_runner import LocalRunner
    from lmm_edit.cli.batch.manifest import read_manifest
    from lmm_edit.cli.batch.worker import EditWorker, WorkerOptions
    from lmm_edit.cli.batch.workflow import load_workflow

    workflow = load_workflow(workflow_name)
    worker_options = WorkerOptions(comfyui=str(comfyui.comfyui_path), steps=int(STEPS), **options)
    return run_batch(read_manifest(manifest), workflow, worker_options, out,
                     lambda: LocalRunner(EditWorker(worker_options, workflow, comfyui)), progress=False)


@pytest.fixture(scope="module")
def local_runs(comfyui, ip2p_checkpoint, self_check_models, manifest, tmp_path_factory):
    """workflow -> (counts, output folder) of one in-process run each, shared by the tests below."""
    runs = {}

    def run(workflow):
        if workflow not in runs:
            out = tmp_path_factory.mktemp(f"local_{workflow}")
            runs[workflow] = _run_in_process(comfyui, workflow, manifest, out), out
        return runs[workflow]

    return run


@pytest.mark.parametrize("workflow", ["instructpix2pix", "smartedit"])
def test_local_run_edits_every_item_and_records_the_broken_one(local_runs, workflow):
    counts, out = local_runs(workflow)
    assert counts == {"done": 5, "failed": 1, "skipped": 0}
    latest = _check_outcome(out, _results(out))
    if workflow == "smartedit":
        assert all(latest[i]["lmm_answer"] is not None and latest[i]["token_status"] for i in GOOD)
    else:
        assert all(latest[i]["lmm_answer"] is None for i in GOOD)  # no LMM in InstructPix2Pix


def test_a_second_run_skips_every_done_item_and_retries_the_failed_one(comfyui, local_runs, manifest, tmp_path):
    _, first = local_runs("instructpix2pix")
    shutil.copytree(first, tmp_path / "out")
    counts = _run_in_process(comfyui, "instructpix2pix", manifest, tmp_path / "out")
    assert counts == {"done": 0, "failed": 1, "skipped": 5}
    assert len(_results(tmp_path / "out")) == len(_results(first)) + 1  # only the broken item's new line


def test_lmm_encode_runs_once_per_image_and_instruction_when_only_the_seed_changes(
        comfyui, ip2p_checkpoint, self_check_models, manifest, tmp_path, monkeypatch):
    node = comfyui.nodes.NODE_CLASS_MAPPINGS["LMMEdit_LMMEncode"]
    original = node.execute.__func__
    encoded = []

    def counting(cls, lmm, image, instruction, *args, **kwargs):
        encoded.append(instruction)
        return original(cls, lmm, image, instruction, *args, **kwargs)

    monkeypatch.setattr(node, "execute", classmethod(counting))
    rows = [dict(id=f"s{seed}", image=str(manifest.parent / "p0.png"), instruction="make it red", seed=seed)
            for seed in (1, 2, 3)]
    rows.insert(1, dict(id="other", image=str(manifest.parent / "p0.png"), instruction="make it blue", seed=1))
    small = tmp_path / "seeds.jsonl"
    small.write_text("".join(json.dumps(row) + "\n" for row in rows))
    counts = _run_in_process(comfyui, "smartedit", small, tmp_path / "out")
    assert counts["done"] == 4
    assert sorted(encoded) == ["make it blue", "make it red"]  # not 4: the seeds share one encode
    pictures = [np.asarray(Image.open(tmp_path / "out" / "images" / f"s{seed}.png")) for seed in (1, 2, 3)]
    assert not np.array_equal(pictures[0], pictures[1]), "the seed did not reach the sampler"


# --- the command line, in a fresh process --------------------------------------------------------------


def _command(manifest, out, *extra) -> list[str]:
    return ["batch", "--workflow", "instructpix2pix", "--manifest", str(manifest), "--out", str(out),
            "--self-check", "--steps", STEPS, *extra]


def _env(comfyui):
    return dict(os.environ, COMFYUI_PATH=str(comfyui.comfyui_path), PYTHONUNBUFFERED="1")


MAIN = "from lmm_edit.__main__ import main; sys.exit(main(sys.argv[1:]))"


def test_a_killed_run_resumes_without_losing_or_repeating_an_item(comfyui, manifest, tmp_path):
    models = tmp_path / "models"
    write_tiny_clip(models / "clip_vision" / "tiny-clip")
    out = tmp_path / "out"
    args = _command(manifest, out, "--metrics", "--models", str(models))
    started = subprocess.Popen([sys.executable, "-c", _ALIAS + MAIN, str(ROOT), *args], cwd=tmp_path,
                               env=_env(comfyui), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.monotonic() + KILL_WITHIN_S
    while started.poll() is None and time.monotonic() < deadline:
        if results.is_file() and results.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.02)
    started.send_signal(signal.SIGKILL)
    started.wait(timeout=60)
    assert started.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert time.monotonic() < deadline, f"no 2 results lines within {KILL_WITHIN_S} s"
    before = _results(out)
    assert 2 <= len(before) < 6

    killed_scratch = f"{SCRATCH_PREFIX}{started.pid}_"
    assert list(pathlib.Path(tempfile.gettempdir()).glob(killed_scratch + "*")), "the killed run had no scratch"
    resumed = run_with_pack(MAIN, *args, cwd=tmp_path, env=_env(comfyui))
    assert resumed.returncode == 1, resumed.stderr[-3000:]  # one item failed
    assert not list(pathlib.Path(tempfile.gettempdir()).glob(killed_scratch + "*")), "killed run's scratch left"
    assert "removed the scratch folder of a worker that was killed" in resumed.stdout
    done_before = sum(record["status"] == "done" for record in before)
    assert f"{done_before} already done" in resumed.stdout
    records = _results(out)
    done = collections.Counter(record["id"] for record in records if record["status"] == "done")
    assert done == collections.Counter(GOOD), "an item was lost or done twice"
    latest = _check_outcome(out, records)
    i3 = latest["i3"]["metrics"]
    assert {"psnr", "ssim", "l1", "psnr_inside", "psnr_outside", "ssim_outside", "clip_image", "clip_text"} <= set(i3)
    assert isinstance(i3["clip_text"], float) and i3["lpips"].startswith("unavailable")
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0] == "type,metric,count,mean,std,infinite"
    assert any(line.startswith("all,psnr,2,") for line in summary)  # i3 and i5 have targets
    assert any(line.startswith("weather,psnr,1,") for line in summary)


# --- a local Ray cluster (ray.init(num_cpus=2)), two actors -------------------------------------------


def test_ray_run_on_two_workers_matches_the_local_outcome(comfyui, manifest, tmp_path):
    """SmartEdit only: the runner does not depend on the workflow (both run in process above), and one Ray
    start with two actors booting ComfyUI is the costliest step of the suite on a 2-core machine."""
    out = tmp_path / "out"
    args = _command(manifest, out, "--ray", "local", "--workers", "2")
    args[2] = "smartedit"
    done = run_with_pack(MAIN, *args, cwd=tmp_path, env=_env(comfyui))
    assert "5 done, 1 failed" in done.stdout and done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    latest = _check_outcome(out, _results(out))
    assert len({latest[i]["worker"] for i in GOOD}) == 2, "both Ray workers should have edited items"
    assert latest["i1"]["worker"] == latest["i2"]["worker"], "items that differ only in seed go to one worker"
