"""A real ComfyUI server on loopback with LMM Edit as a custom node, and its real frontend in headless Chromium.

The server is ComfyUI's own ``main.py`` from COMFYUI_PATH, started once per test run as a subprocess
in its own process group (``--cpu``, 127.0.0.1, a free port). ``--base-directory`` points at a temp
folder whose ``custom_nodes/lmm_edit`` is a symlink to this repository, so only this pack is loaded
and the server writes its models/input/output/temp/user folders there; the database is in memory.
Nothing is written into the ComfyUI checkout. No model weights exist in that folder: this is what a
user sees before downloading any.

Server-only tests need COMFYUI_PATH; browser tests also need Debian's chromium (/usr/bin/chromium)
and the Python package ``playwright`` (which drives that binary; no Playwright browser download).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
PACK_FOLDER = "lmm_edit"  # the symlink's name under custom_nodes/: ComfyUI names the pack after its folder
CHROMIUM = pathlib.Path("/usr/bin/chromium")  # Debian's package "chromium"
# Flags for Chromium in this sandbox (env notes): no GPU, no background traffic to Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
SERVER_START_TIMEOUT_S = 120.0  # a CPU start with only this pack takes ~10 s here
SERVER_STOP_TIMEOUT_S = 15.0
APP_READY_TIMEOUT_MS = 60_000
VIEWPORT = {"width": 1400, "height": 900}
# Anything the browser reports that names this pack: its extension URLs (folder and project name) or node ids.
PACK_MENTION = re.compile(r"lmm[_-]?edit", re.IGNORECASE)


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class ComfyServer:
    url: str  # "http://127.0.0.1:<port>"
    log_path: pathlib.Path

    def get(self, path: str) -> tuple[int, str, bytes]:
        """GET ``path``; returns (status, content type, body). Error statuses are returned, not raised."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                return response.status, response.headers.get_content_type(), response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get_content_type(), error.read()

    def get_json(self, path: str):
        status, _, body = self.get(path)
        assert status == 200, f"GET {path} answered {status}: {body[:500]!r}"
        return json.loads(body)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def _stop_process_group(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=SERVER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=SERVER_STOP_TIMEOUT_S)


def _wait_until_serving(server: ComfyServer, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"ComfyUI exited with code {process.returncode} while starting; log:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(server.url + "/system_stats", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    pytest.fail(f"ComfyUI did not answer GET /system_stats within {SERVER_START_TIMEOUT_S:.0f} s; "
                f"log:\n{server.log_tail()}")


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory) -> Iterator[ComfyServer]:
    comfyui_path = os.environ.get("COMFYUI_PATH")
    if not comfyui_path:
        pytest.skip("COMFYUI_PATH is unset: browser tests need a ComfyUI checkout (see README, Tests)")
    from lmm_edit.cli.comfy_session import missing_comfyui_requirements, requirements_hint

    missing = missing_comfyui_requirements()
    if missing:
        pytest.fail(requirements_hint(comfyui_path, missing), pytrace=False)
    base = tmp_path_factory.mktemp("comfyui_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_FOLDER).symlink_to(REPO_ROOT, target_is_directory=True)
    port = _free_loopback_port()
    command = [
        sys.executable, str(pathlib.Path(comfyui_path) / "main.py"),
        "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
        "--base-directory", str(base),
        # The default database is <ComfyUI>/user/comfyui.db, inside the checkout.
        "--database-url", "sqlite:///:memory:",
        "--disable-api-nodes",
    ]
    # No .pyc files written into the (read-only for us) ComfyUI checkout.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1"}
    log_path = base / "server.log"
    server = ComfyServer(url=f"http://127.0.0.1:{port}", log_path=log_path)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_until_serving(server, process)
        yield server
    finally:
        _stop_process_group(process)


@pytest.fixture(scope="module")
def chromium(comfy_server):
    """Module-scoped: Playwright's sync API runs an event loop in this thread until it stops, and the
    integration tests that follow in the same run need asyncio.run()."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package for browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    # Playwright gives every launch a new empty profile directory and removes it on close.
    playwright = sync_api.sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


@dataclass
class BrowserLog:
    """What the page reported: console messages, uncaught errors (with stacks) and HTTP responses."""

    console: list[tuple[str, str, str]] = field(default_factory=list)  # (type, text, source URL)
    page_errors: list[str] = field(default_factory=list)  # message + stack
    responses: dict[str, int] = field(default_factory=dict)  # URL -> last status

    def errors_naming_the_pack(self) -> list[str]:
        console_errors = [f"console.{kind}: {text} ({source})" for kind, text, source in self.console
                          if kind == "error" and PACK_MENTION.search(text + " " + source)]
        uncaught = [f"uncaught: {error}" for error in self.page_errors if PACK_MENTION.search(error)]
        return console_errors + uncaught


@dataclass(frozen=True)
class AppPage:
    page: object  # playwright.sync_api.Page
    log: BrowserLog


@pytest.fixture
def app_page(chromium, comfy_server) -> Iterator[AppPage]:
    """A fresh browser context on the ComfyUI frontend, after ``window.app`` is set (app.setup() done)."""
    context = chromium.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    log = BrowserLog()
    page.on("console", lambda message: log.console.append(
        (message.type, message.text, message.location.get("url", ""))))
    page.on("pageerror", lambda error: log.page_errors.append(f"{error.message}\n{error.stack}"))
    page.on("response", lambda response: log.responses.__setitem__(response.url, response.status))
    page.goto(comfy_server.url + "/")
    # The frontend sets window.app only after app.setup(): extensions imported, their setup() run.
    page.wait_for_function("() => window.app !== undefined && window.graph !== undefined",
                           timeout=APP_READY_TIMEOUT_MS)
    try:
        yield AppPage(page=page, log=log)
    finally:
        context.close()


@pytest.fixture(scope="session")
def example_workflows() -> dict[str, dict]:
    """The pack's example workflows (UI format), by file stem."""
    folder = REPO_ROOT / "example_workflows"
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}
