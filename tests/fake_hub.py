"""A tiny Hugging Face Hub on 127.0.0.1 for the download tests (set ``HF_ENDPOINT`` to its ``url``).

Serves the endpoints huggingface_hub 2.4 calls (read in its source):
- ``GET /api/models/<repo>/tree/<revision>?recursive=...``: JSON entries ``{type, path, size, oid, lfs}``
  (``HfApi.list_repo_tree``; one page, no ``Link`` header);
- ``HEAD|GET /<repo>/resolve/<revision>/<path>`` (``get_hf_file_metadata``, ``http_get``): small files answer 200
  with ``ETag`` = git blob id and ``X-Repo-Commit``; LFS files answer 302 to another origin (``localhost`` instead
  of ``127.0.0.1``, as the Hub redirects to its CDN) with ``X-Linked-Size``, ``X-Linked-Etag`` (sha256) and
  ``X-Repo-Commit``; ``GET /lfs/<sha256>`` serves the bytes with ``Range: bytes=<n>-`` support (206).
Faults: ``stall_after[path] = n`` sends n bytes of that file then holds the connection open (a download to be
killed); ``corrupt[path] = bytes`` serves other bytes than the listing describes.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".model")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git object id


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, bytes]]) -> None:
        self.repos = repos
        self.stall_after: dict[str, int] = {}
        self.corrupt: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, str | None, str | None]] = []  # method, path, Range, Authorization
        self.release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    def tree(self, repo: str) -> list[dict]:
        entries, folders = [], set()
        for path, data in sorted(self.repos[repo].items()):
            parts = path.split("/")[:-1]
            folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
            entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_id(data)}
            if self.is_lfs(path):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return [{"type": "directory", "path": f, "oid": "0" * 40} for f in sorted(folders)] + entries

    def sent_ranges(self, path_end: str) -> list[str | None]:
        return [r for method, path, r, _ in self.requests if method == "GET" and path.endswith(path_end)]

    def _find(self, sha: str) -> tuple[str, bytes] | None:
        for files in self.repos.values():
            for path, data in files.items():
                if hashlib.sha256(data).hexdigest() == sha:
                    return path, self.corrupt.get(path, data)
        return None

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _record(self) -> None:
                hub.requests.append((self.command, self.path, self.headers.get("Range"),
                                     self.headers.get("Authorization")))

            def _send(self, status: int, headers: dict, body: bytes = b"") -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, str(value))
                self.end_headers()
                if self.command != "HEAD" and body:
                    self.wfile.write(body)

            def _json(self, value) -> None:
                self._send(200, {"Content-Type": "application/json", "Content-Length": len(body := json.dumps(value)
                                                                                             .encode())}, body)

            def _not_found(self) -> None:
                self._send(404, {"X-Error-Code": "EntryNotFound", "Content-Length": 0})

            def _bytes(self, path: str, data: bytes, headers: dict) -> None:
                start = 0
                status = 200
                if (wanted := self.headers.get("Range")) and wanted.startswith("bytes="):
                    start = int(wanted[6:].split("-")[0])
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                body = data[start:]
                headers.update({"Content-Length": len(body), "Accept-Ranges": "bytes"})
                if self.command == "HEAD" or path not in hub.stall_after:
                    return self._send(status, headers, body)
                cut = max(hub.stall_after[path] - start, 0)
                self._send(status, headers, body[:cut])
                self.wfile.flush()
                hub.release.wait(60)  # hold the connection: the client is killed meanwhile

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self._record()
                url = urlparse(self.path)
                parts = [unquote(p) for p in url.path.strip("/").split("/")]
                if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tree":
                    repo = "/".join(parts[2:4])
                    return self._json(hub.tree(repo)) if repo in hub.repos else self._not_found()
                if parts[0] == "lfs" and len(parts) == 2 and (found := hub._find(parts[1])):
                    return self._bytes(found[0], found[1], {"ETag": f'"{parts[1]}"'})
                if len(parts) >= 5 and parts[2] == "resolve":
                    return self._resolve("/".join(parts[:2]), "/".join(parts[4:]))
                self._not_found()

            do_HEAD = do_GET  # noqa: N815

            def _resolve(self, repo: str, path: str) -> None:
                data = hub.repos.get(repo, {}).get(path)
                if data is None:
                    return self._not_found()
                if hub.is_lfs(path):
                    sha = hashlib.sha256(data).hexdigest()
                    return self._send(302, {"Location": f"http://localhost:{hub.port}/lfs/{sha}",
                                            "X-Linked-Size": len(data), "X-Linked-Etag": f'"{sha}"',
                                            "ETag": f'"{git_blob_id(data)}"', "X-Repo-Commit": COMMIT,
                                            "Content-Length": 0})
                self._bytes(path, hub.corrupt.get(path, data), {"ETag": f'"{git_blob_id(data)}"',
                                                                "X-Repo-Commit": COMMIT})

        return Handler


def wait_for(predicate, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False
