"""Fetching catalogue entries from the Hugging Face Hub into ComfyUI's model folders.

Only ``python -m lmm_edit download`` calls this; no node downloads anything.

How (huggingface_hub >= 0.25, checked against 2.4.0's source):
- ``HfApi.list_repo_tree(recursive=True)`` gives each file's size, git blob id and, for LFS files, sha256;
  ``get_hf_file_metadata`` (a HEAD on ``resolve/``) gives the size the server will send and the commit.
- The bytes come from ``file_download.http_get(resume_size=...)``: it sends ``Range: bytes=<n>-`` and shows a
  tqdm bar per file. ``hf_hub_download(local_dir=...)`` is not used: since huggingface_hub 1.x its
  ``_download_to_tmp_and_move`` writes a process-unique ``*.incomplete`` file and deletes it on failure, so an
  interrupted download starts again from zero. Here a ``<file>.part`` beside the destination survives an
  interruption and the next run continues it.
- Every file is checked (size, then sha256 for LFS files or the git blob id for small ones) before the atomic
  ``os.replace`` onto its final name; a mismatch deletes the ``.part`` and raises ``CorruptDownload``.
- Folder downloads land in a hidden ``.<name>.partial`` folder (not shown in node dropdowns) renamed when complete.
- Nothing goes to the Hugging Face cache. ``HF_HUB_OFFLINE=1``: no network at all. The token is the usual Hub
  login (``HF_TOKEN`` or ``hf auth login``), read by huggingface_hub; the pack never stores it.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
from dataclasses import dataclass

from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import build_hf_headers

from ..loaders.model_catalogue import IGNORED_REPO_FILES, Download
from .model_paths import ModelFolders

CHUNK = 8 << 20
LOGIN_FIX = "check the name, then log in with `hf auth login` (or set HF_TOKEN) if the repository is gated or private"


class DownloadError(RuntimeError):
    pass


class CorruptDownload(DownloadError):
    pass


@dataclass(frozen=True)
class RemoteFile:
    size: int
    sha256: str | None  # LFS files
    blob_id: str | None  # git blob sha1


@dataclass(frozen=True)
class PlannedFile:
    repo_path: str
    dest: pathlib.Path
    remote: RemoteFile


def is_offline() -> bool:
    return bool(constants.HF_HUB_OFFLINE)


def present(download: Download, folders: ModelFolders) -> list[tuple[str, str, pathlib.Path | None]]:
    """(category, relative path, where it is or None) of every destination, checked without network."""
    found = []
    for category, relative in download.destinations():
        where = folders.find(category, relative)
        expected = next((f.size for f in download.files if (f.category, f.target) == (category, relative)), None)
        if where is not None and expected is not None and where.is_file() and where.stat().st_size != expected:
            where = None
        found.append((category, relative, where))
    return found


def list_remote(download: Download, endpoint: str | None) -> dict[str, RemoteFile]:
    """Repository path -> size and hashes, from the Hub's tree listing."""
    try:
        entries = HfApi(endpoint=endpoint).list_repo_tree(download.repo_id, recursive=True, revision=download.revision)
        return {e.path: RemoteFile(e.size, e.lfs.sha256 if e.lfs else None, e.blob_id)
                for e in entries if hasattr(e, "blob_id")}
    except (RepositoryNotFoundError, GatedRepoError) as err:
        raise DownloadError(f"{download.repo_id}: the Hub refused the listing ({type(err).__name__}). "
                            f"Fix: {LOGIN_FIX}") from err


def plan(download: Download, folders: ModelFolders, remote: dict[str, RemoteFile]) -> list[PlannedFile]:
    planned = []
    for f in download.files:
        if f.repo_path not in remote:
            raise DownloadError(f"{download.repo_id}: the Hub has no file {f.repo_path} at {download.revision}. "
                                "Fix: update LMM Edit; the repository changed since this catalogue was written")
        info = remote[f.repo_path]
        where = folders.find(f.category, f.target) or folders.destination(f.category, f.target)
        planned.append(PlannedFile(f.repo_path, where,
                                   RemoteFile(f.size or info.size, f.sha256 or info.sha256, info.blob_id)))
    if download.folder is not None:
        staging = folders.destination(download.folder.category, f".{download.folder.target}.partial")
        for path, info in sorted(remote.items()):
            if path not in IGNORED_REPO_FILES and any(path.startswith(p) for p in download.folder.include):
                planned.append(PlannedFile(path, staging / path, info))
        if not any(p.dest.is_relative_to(staging) for p in planned):
            raise DownloadError(f"{download.repo_id}: none of its files is under {list(download.folder.include)}")
    return planned


def git_blob_id(path: pathlib.Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())  # noqa: S324 - git's object id, not security
    return _digest_file(path, digest)


def sha256_of(path: pathlib.Path) -> str:
    return _digest_file(path, hashlib.sha256())


def _digest_file(path: pathlib.Path, digest) -> str:
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def verify(path: pathlib.Path, remote: RemoteFile, label: str) -> None:
    """Size, then sha256 (LFS) or git blob id; a mismatch deletes the file and raises ``CorruptDownload``."""
    size = path.stat().st_size
    problem = None
    if size != remote.size:
        problem = f"{size} bytes, the Hub lists {remote.size}"
    elif remote.sha256 is not None and (found := sha256_of(path)) != remote.sha256:
        problem = f"sha256 {found}, the Hub lists {remote.sha256}"
    elif remote.sha256 is None and remote.blob_id and (found := git_blob_id(path)) != remote.blob_id:
        problem = f"git blob id {found}, the Hub lists {remote.blob_id}"
    if problem:
        path.unlink()
        raise CorruptDownload(f"{label}: the downloaded file is corrupt ({problem}); it was deleted. "
                              "Fix: run the same download command again")


def fetch_file(repo_id: str, revision: str, planned: PlannedFile, endpoint: str | None) -> str:
    """Downloads one file (continuing a ``.part``), verifies it, renames it into place; returns what happened."""
    dest = planned.dest
    if dest.is_file() and dest.stat().st_size == planned.remote.size:
        return "present"
    dest.parent.mkdir(parents=True, exist_ok=True)
    url = hf_hub_url(repo_id, planned.repo_path, revision=revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url)
    except EntryNotFoundError as err:
        raise DownloadError(f"{repo_id}/{planned.repo_path}: not on the Hub any more ({err})") from err
    except (RepositoryNotFoundError, GatedRepoError) as err:
        raise DownloadError(f"{repo_id}: access refused ({type(err).__name__}). Fix: {LOGIN_FIX}") from err
    if meta.size is not None and meta.size != planned.remote.size:
        raise DownloadError(f"{repo_id}/{planned.repo_path}: the Hub serves {meta.size} bytes but lists "
                            f"{planned.remote.size}; run the command again later")
    part = dest.with_name(dest.name + ".part")
    done = part.stat().st_size if part.is_file() else 0
    if done > planned.remote.size:
        part.unlink()
        done = 0
    try:
        with open(part, "ab") as handle:
            http_get(url, handle, resume_size=done, headers=build_hf_headers(), expected_size=planned.remote.size,
                     displayed_filename=dest.name)
    except (HfHubHTTPError, OSError) as err:  # OSError: http_get's size consistency check
        raise DownloadError(f"{repo_id}/{planned.repo_path}: download failed ({err}); run the command again "
                            f"to continue from byte {part.stat().st_size}") from err
    verify(part, planned.remote, f"{repo_id}/{planned.repo_path}")
    os.replace(part, dest)
    return f"downloaded (commit {meta.commit_hash[:10]})" if meta.commit_hash else "downloaded"


def finish_folder(staging: pathlib.Path, final: pathlib.Path) -> None:
    """Moves a completed staging folder into place (file by file when the folder already exists)."""
    if not final.exists():
        os.replace(staging, final)
        return
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        target = final / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    shutil.rmtree(staging)


def run_download(download: Download, folders: ModelFolders, endpoint: str | None = None, report=print) -> int:
    """Fetches everything ``download`` needs that is not already there; returns the number of files fetched."""
    status = present(download, folders)
    if all(where is not None for *_, where in status):
        for *_, where in status:
            report(f"present: {where}")
        return 0
    if is_offline():
        missing = [f"{c}/{r}" for c, r, where in status if where is None]
        raise DownloadError(f"HF_HUB_OFFLINE is set and {', '.join(missing)} missing. "
                            "Fix: unset HF_HUB_OFFLINE to download, or copy the files in by hand")
    remote = list_remote(download, endpoint)
    fetched = 0
    for planned in plan(download, folders, remote):
        outcome = fetch_file(download.repo_id, download.revision, planned, endpoint)
        fetched += outcome != "present"
        report(f"{outcome}: {planned.dest}")
    if download.folder is not None:
        staging = folders.destination(download.folder.category, f".{download.folder.target}.partial")
        final = folders.destination(download.folder.category, download.folder.target)
        finish_folder(staging, final)
        report(f"complete: {final}")
    return fetched
