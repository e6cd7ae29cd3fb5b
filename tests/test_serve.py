"""``formicary serve``: the TUI over HTTP behind a token, opened in headless Chromium.

The browser's WebSocket traffic is watched from inside the page (a script added before the page's own), so the
test reads what the served TUI drew: the sessions browser with the record's sessions, then a session after a
key press sent through the browser.
"""

from __future__ import annotations

import asyncio
import select
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from tests.browser import Browser
from tests.tui_record import build_record

WATCH = """
window.__received = '';
const Native = window.WebSocket;
window.WebSocket = function (...args) {
  const ws = new Native(...args);
  ws.binaryType = 'arraybuffer';
  ws.addEventListener('message', (e) => {
    window.__received += typeof e.data === 'string' ? e.data
      : new TextDecoder('utf-8', {fatal: false}).decode(new Uint8Array(e.data));
  });
  return ws;
};
window.WebSocket.prototype = Native.prototype;
Object.assign(window.WebSocket, Native);
"""
PLAIN = "window.__received.replace(/\\x1b\\[[0-9;?]*[A-Za-z]/g, '')"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path: Path):
    db = tmp_path / "formicary.db"
    build_record(db, tmp_path / "repo")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "formicary", "serve", "--port", str(port), "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline() if select.select([proc.stdout], [], [], 60)[0] else ""
    try:
        assert line.startswith(f"formicary: serving the TUI at http://127.0.0.1:{port}/?token="), line
        wait_listening(port)
        yield line.split(" at ", 1)[1].strip(), port
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def wait_listening(port: int, timeout: float = 30) -> None:
    """The line is printed as the server starts; the socket listens a moment later."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_every_request_needs_the_token(served: tuple[str, int]) -> None:
    url, port = served
    base = f"http://127.0.0.1:{port}"
    assert status(f"{base}/") == 403
    assert status(f"{base}/?token=wrong") == 403
    assert status(f"{base}/static/js/textual.js") == 403
    with urllib.request.urlopen(url, timeout=30) as r:
        page = r.read().decode()
        cookie = r.headers["Set-Cookie"]
    assert "googleapis" not in page and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    token_cookie = cookie.split(";", 1)[0]
    assert status(f"{base}/static/js/textual.js", {"Cookie": token_cookie}) == 200

    async def websockets() -> list[int]:
        codes = []
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {"Cookie": token_cookie, "Origin": "http://evil.example"}):
                try:
                    async with http.ws_connect(f"{base}/ws", headers=headers):
                        codes.append(101)
                except aiohttp.WSServerHandshakeError as exc:
                    codes.append(exc.status)
        return codes

    assert asyncio.run(websockets()) == [403, 403]


def test_chromium_shows_the_sessions_browser_and_opens_a_session(
    served: tuple[str, int], tmp_path: Path
) -> None:
    url, _ = served

    async def look() -> tuple[str, str, int]:
        async with Browser(tmp_path, width=1400, height=900) as b:
            await b.add_init_script(WATCH)
            await b.goto(url)
            listed = await b.wait_for(
                f"{PLAIN}.includes('Fix the flaky date parsing') && {PLAIN}", timeout=120
            )
            await asyncio.sleep(1.0)
            await b.screenshot(tmp_path / "serve-browser.png")
            painted = await b.evaluate(
                "document.body.classList.contains('-first-byte') &&"
                " document.querySelectorAll('.textual-terminal canvas').length"
            )
            await b.evaluate("document.querySelector('.xterm-helper-textarea')?.focus()")
            await b.press("Enter", 13, "\r")
            opened = await b.wait_for(
                f"{PLAIN}.includes('Handle empty reports in JSON') && {PLAIN}", timeout=60
            )
            await asyncio.sleep(1.0)
            await b.screenshot(tmp_path / "serve-session.png")
            return listed or "", opened or "", painted or 0

    listed, opened, painted = asyncio.run(look())
    assert "Fix the flaky date parsing" in listed and "sessions" in listed
    assert "Handle empty reports in JSON" in opened  # the task tree of the session the key opened
    assert painted >= 1
    assert (tmp_path / "serve-browser.png").stat().st_size > 10_000


def test_serve_bad_input_is_one_line(tmp_path: Path) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "formicary", "serve", *args], capture_output=True, text=True, timeout=60
        )

    nodb = serve("--db", str(tmp_path / "none.db"))
    assert nodb.returncode == 2 and nodb.stderr.strip() == f"formicary: no record at {tmp_path / 'none.db'}"
    bad_url = serve("--public-url", "ftp://x")
    assert bad_url.returncode == 2 and len(bad_url.stderr.strip().splitlines()) == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = serve("--port", str(taken.getsockname()[1]))
    assert busy.returncode == 2 and busy.stderr.strip().startswith("formicary: cannot serve on 127.0.0.1:")
