"""``download`` against a fake Hub on 127.0.0.1: destinations, hashes, resume after a kill, offline, token, no cache.

The fake Hub (tests/fake_hub.py) answers the endpoints huggingface_hub calls; the files it serves are
described by its own tree listing, so every check here is against what "the Hub" says, not our catalogue.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys

import pytest
from fake_hub import FakeHub, wait_for
from huggingface_hub import constants

from lmm_edit.cli.download_command import describe
from lmm_edit.cli.download_command import main as download_main
from lmm_edit.cli.hub_download import CorruptDownload, DownloadError, run_download
from lmm_edit.cli.model_paths import ModelFolders
from lmm_edit.loaders import model_folders as mf
from lmm_edit.loaders.model_catalogue import DOWNLOADS, Download, HubFile
from pack_process import _ALIAS, ROOT

CLIP_REPO = "openai/clip-vit-large-patch14"
CHUNK = constants.DOWNLOAD_CHUNK_SIZE  # http_get writes whole chunks: an interrupted .part holds a multiple of it


def folders_under(root) -> ModelFolders:
    return ModelFolders({c: [str(root / c)] for c in (mf.CHECKPOINTS, mf.CLIP_VISION, mf.IPADAPTER, mf.SMARTEDIT,
                                                      mf.LLAVA, mf.LLAVA_DELTA, mf.ANY2PIX)})


def clip_repo(weights: bytes) -> dict[str, bytes]:
    return {"model.safetensors": weights, "config.json": b'{"model_type": "clip"}', "README.md": b"card"}


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no stored login; must stay empty


def test_list_names_every_download_with_size_and_folder():
    text = describe(None)
    for download in DOWNLOADS.values():
        assert download.name in text and download.repo_id in text and download.approx_size in text
    assert "lmm_edit/smartedit/SmartEdit-7B" in text and "clip_vision/clip-vit-large-patch14/model.safetensors" in text
    assert "prepare-llava" in text


def test_list_works_without_comfyui(monkeypatch, capsys):
    monkeypatch.setenv("COMFYUI_PATH", "/nowhere")
    assert download_main(["--list", "--comfyui", "/nowhere"]) == 0
    assert "instructpix2pix" in capsys.readouterr().out


def test_files_land_in_their_category_folders_verified_and_without_leftovers(tmp_path, no_token):
    weights = os.urandom(300_000)
    with FakeHub({CLIP_REPO: clip_repo(weights)}) as hub:
        fetched = run_download(DOWNLOADS["clip-vit-l"], folders_under(tmp_path), endpoint=hub.url, report=lambda _: None)
    target = tmp_path / mf.CLIP_VISION / "clip-vit-large-patch14"
    assert fetched == 2
    assert (target / "model.safetensors").read_bytes() == weights
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors"]
    assert not (tmp_path / "hf_home").exists() or not any((tmp_path / "hf_home").rglob("*"))


def test_present_files_need_no_network(tmp_path, no_token):
    with FakeHub({CLIP_REPO: clip_repo(b"x" * 1000)}) as hub:
        run_download(DOWNLOADS["clip-vit-l"], folders_under(tmp_path), endpoint=hub.url, report=lambda _: None)
        before = len(hub.requests)
        lines = []
        assert run_download(DOWNLOADS["clip-vit-l"], folders_under(tmp_path), endpoint=hub.url, report=lines.append) == 0
        assert len(hub.requests) == before and all(line.startswith("present") for line in lines)


def test_offline_with_files_missing_names_them_and_sends_nothing(tmp_path, monkeypatch, no_token):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with FakeHub({CLIP_REPO: clip_repo(b"x")}) as hub:
        with pytest.raises(DownloadError, match="HF_HUB_OFFLINE.*clip-vit-large-patch14/model.safetensors"):
            run_download(DOWNLOADS["clip-vit-l"], folders_under(tmp_path), endpoint=hub.url)
        assert hub.requests == []


def test_corrupted_lfs_file_is_detected_deleted_and_never_renamed(tmp_path, no_token):
    weights = os.urandom(50_000)
    with FakeHub({CLIP_REPO: clip_repo(weights)}) as hub:
        hub.corrupt["model.safetensors"] = bytes(50_000)  # same size, other bytes: only the sha256 can tell
        with pytest.raises(CorruptDownload, match=f"sha256 .*{hashlib.sha256(weights).hexdigest()}"):
            run_download(DOWNLOADS["clip-vit-l"], folders_under(tmp_path), endpoint=hub.url, report=lambda _: None)
    target = tmp_path / mf.CLIP_VISION / "clip-vit-large-patch14"
    assert not (target / "model.safetensors").exists() and not (target / "model.safetensors.part").exists()


def test_corrupted_small_file_is_caught_by_its_git_blob_id(tmp_path, no_token):
    with FakeHub({CLIP_REPO: clip_repo(b"w" * 100)}) as hub:
        hub.corrupt["config.json"] = b'{"model_type": "clop"}'
        with pytest.raises(CorruptDownload, match="git blob id"):
            run_download(DOWNLOADS["clip-vit-l"], folders_under(tmp_path), endpoint=hub.url, report=lambda _: None)


def test_catalogue_hash_wins_over_a_hub_serving_another_file(tmp_path, no_token):
    entry = Download("t", "acme/t", "test", "1 kB", "test", files=(
        HubFile("w.safetensors", mf.CHECKPOINTS, "w.safetensors", sha256="0" * 64),))
    with FakeHub({"acme/t": {"w.safetensors": b"abc" * 100}}) as hub:
        with pytest.raises(CorruptDownload, match="0000000000"):
            run_download(entry, folders_under(tmp_path), endpoint=hub.url, report=lambda _: None)


def test_folder_download_takes_only_the_release_folders_and_appears_when_complete(tmp_path, no_token):
    repo = {"LLM-15000/adapter_model.bin": b"L" * 5000, "LLM-15000/adapter_config.json": b"{}",
            "embeddings_qformer/checkpoint-15000_embeddings_qformer.bin": b"Q" * 700,
            "modulate-15000/adapter_model.bin": b"M" * 600, "unet-15000/adapter_model.bin": b"U" * 900,
            "README.md": b"card", "other/notes.txt": b"n"}
    with FakeHub({"TencentARC/SmartEdit-7B": repo}) as hub:
        run_download(DOWNLOADS["smartedit-7b"], folders_under(tmp_path), endpoint=hub.url, report=lambda _: None)
    bundle = tmp_path / mf.SMARTEDIT / "SmartEdit-7B"
    got = sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file())
    assert got == sorted(k for k in repo if k.split("/")[0] in ("LLM-15000", "embeddings_qformer", "modulate-15000",
                                                                 "unet-15000"))
    assert sorted(p.name for p in (tmp_path / mf.SMARTEDIT).iterdir()) == ["SmartEdit-7B"]  # staging folder gone


def test_token_comes_from_the_usual_login_and_is_sent_never_stored(tmp_path, monkeypatch, no_token):
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_123")
    with FakeHub({CLIP_REPO: clip_repo(b"z" * 2000)}) as hub:
        run_download(DOWNLOADS["clip-vit-l"], folders_under(tmp_path), endpoint=hub.url, report=lambda _: None)
        auth = {a for method, path, _, a in hub.requests if "/resolve/" in path}
    assert auth == {"Bearer hf_fake_token_123"}
    assert not any(b"hf_fake_token_123" in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


_DOWNLOAD_IN_CHILD = (
    "import pathlib; from lmm_edit.cli.hub_download import run_download; "
    "from lmm_edit.cli.model_paths import ModelFolders; from lmm_edit.loaders.model_catalogue import DOWNLOADS; "
    "root = pathlib.Path(sys.argv[1]); "
    "run_download(DOWNLOADS['clip-vit-l'], ModelFolders({'clip_vision': [str(root / 'clip_vision')]}))"
)


def _start_child(root, hub_url, tmp_path) -> subprocess.Popen:
    env = {**os.environ, "HF_ENDPOINT": hub_url, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_DISABLE_XET": "1"}
    return subprocess.Popen([sys.executable, "-c", _ALIAS + _DOWNLOAD_IN_CHILD, str(ROOT), str(root)], env=env,
                            cwd=ROOT.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def test_killed_download_continues_from_its_part_file_with_a_range_request(tmp_path, no_token):
    weights = os.urandom(CHUNK + CHUNK // 2)
    part = tmp_path / "clip_vision" / "clip-vit-large-patch14" / "model.safetensors.part"
    with FakeHub({CLIP_REPO: clip_repo(weights)}) as hub:
        hub.stall_after["model.safetensors"] = CHUNK + 1000
        child = _start_child(tmp_path, hub.url, tmp_path)
        try:
            assert wait_for(lambda: part.is_file() and part.stat().st_size >= CHUNK), child.stderr.read1()
        finally:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        assert part.stat().st_size == CHUNK and not part.with_suffix("").exists()
        del hub.stall_after["model.safetensors"]
        second = _start_child(tmp_path, hub.url, tmp_path)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err.decode()[-2000:]
        assert hub.sent_ranges("/lfs/" + hashlib.sha256(weights).hexdigest())[-1] == f"bytes={CHUNK}-"
    assert part.with_suffix("").read_bytes() == weights and not part.exists()


def test_a_file_already_in_another_folder_of_its_category_is_not_fetched_again(tmp_path, no_token):
    weights = os.urandom(3000)
    other = tmp_path / "other_disk"
    (other / "clip-vit-large-patch14").mkdir(parents=True)
    (other / "clip-vit-large-patch14" / "model.safetensors").write_bytes(weights)
    folders = ModelFolders({mf.CLIP_VISION: [str(tmp_path / "first"), str(other)]})
    with FakeHub({CLIP_REPO: clip_repo(weights)}) as hub:
        assert run_download(DOWNLOADS["clip-vit-l"], folders, endpoint=hub.url, report=lambda _: None) == 1
        assert hub.sent_ranges("model.safetensors") == [] and hub.sent_ranges(hashlib.sha256(weights).hexdigest()) == []
    assert (tmp_path / "first" / "clip-vit-large-patch14" / "config.json").is_file()
    assert not (tmp_path / "first" / "clip-vit-large-patch14" / "model.safetensors").exists()
