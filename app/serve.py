"""``formicary serve``: the same Textual app in a web browser, through textual-serve, behind a token.

Each browser connection runs its own ``formicary`` (the sessions browser) as a subprocess speaking Textual's
web driver; sessions are opened read-only or attached, so steering works as from a second terminal. The server
binds to loopback by default (reach it from another machine through an SSH tunnel). Every request must carry
the token: the printed URL has it as ``?token=``, which sets a same-site cookie for the page's own requests
(scripts, the WebSocket). The WebSocket also checks its Origin, so another site open in the same browser cannot
drive the TUI. Imported only by ``formicary serve``.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
import shlex
import sys
from pathlib import Path

from aiohttp import web
from textual_serve.server import Server

COOKIE = "formicary_token"
WEB_FONT = re.compile(rb'<link\s+rel="stylesheet"\s+href="https://fonts\.googleapis\.com[^"]*"\s*/>', re.S)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def app_command(db_path: Path | None) -> str:
    """The shell command textual-serve runs per connection: this Python's formicary, the sessions browser."""
    command = f"{shlex.quote(sys.executable)} -m formicary"
    return f"FORMICARY_DB={shlex.quote(str(db_path))} {command}" if db_path else command


class TokenServer(Server):
    """textual-serve's server with a token check on every request and no third-party web font."""

    def __init__(self, command: str, host: str, port: int, token: str, public_url: str | None = None) -> None:
        display_host = f"[{host}]" if ":" in host else host
        super().__init__(
            command,
            host=host,
            port=port,
            title="formicary",
            public_url=public_url or f"http://{display_host}:{port}",
        )
        self.token = token

    @property
    def url(self) -> str:
        return f"{self.public_url}/?token={self.token}"

    def _allowed(self, request: web.Request) -> bool:
        given = request.query.get("token") or request.cookies.get(COOKIE) or ""
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.middlewares.append(self._guard)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler):  # type: ignore[no-untyped-def]
        if not self._allowed(request):
            raise web.HTTPForbidden(
                text="formicary: open the URL printed by `formicary serve` (it has the token)\n"
            )
        if request.path == "/ws":
            origin = request.headers.get("Origin")
            if origin is not None and origin.rstrip("/") != self.public_url.rstrip("/"):
                raise web.HTTPForbidden(text="formicary: the WebSocket's origin is not this server\n")
        response = await handler(request)
        if request.path == "/" and isinstance(response, web.Response) and response.body is not None:
            response.body = WEB_FONT.sub(b"", bytes(response.body))  # type: ignore[arg-type]
            if "token" in request.query:
                response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict", path="/")
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    async def on_startup(self, app: web.Application) -> None:
        """One line instead of textual-serve's banner: where to point the browser."""
        print(f"formicary: serving the TUI at {self.url}", flush=True)
        print("formicary: Ctrl-C stops the server (sessions keep their record)", flush=True)


def new_token() -> str:
    return secrets.token_urlsafe(24)
