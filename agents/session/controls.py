"""Controls for a session: the same small API whether the engine is in this process or another one.

An attached TUI has no engine object; it writes control rows to the store and the running engine polls them
(one indexed query every half second), so every control is recorded whichever way it arrives. Headless, signals
are controls too.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio

from ...store import queries as q
from ...store.db import connect
from ..status import Control
from .record import send_control

if TYPE_CHECKING:
    from .context import SessionContext

CONTROL_POLL = 0.5


def pid_alive(pid: int | None) -> bool:
    """Whether the process that recorded itself as running a session still exists."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class Controls(Protocol):
    """What the operator can do to a running session."""

    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def fresh_start(self) -> None: ...
    def stop(self) -> None: ...
    def steer(self, text: str, replace_goal: bool = False) -> None: ...
    def set_workers(self, n: int) -> None: ...


class SessionControls(Protocol):
    """The engine's control API, with where each control came from (recorded with it)."""

    def pause(self, source: str = "api") -> None: ...
    def resume(self, source: str = "api") -> None: ...
    def fresh_start(self, source: str = "api") -> None: ...
    def stop(self, source: str = "api", reason: str = "stopped by the operator") -> None: ...
    def steer(self, text: str, replace_goal: bool = False, source: str = "api") -> None: ...
    def set_workers(self, n: int, source: str = "api") -> None: ...


class StoreControls:
    """Controls for a session running in another process, sent through the ``controls`` table."""

    def __init__(self, db_path: Path | str, session_id: str, source: str = "attach") -> None:
        self.db_path = Path(db_path)
        self.session_id = session_id
        self.source = source

    def _send(self, kind: Control, payload: dict | None = None) -> None:
        send_control(self.db_path, self.session_id, kind, payload, self.source)

    def pause(self) -> None:
        self._send(Control.PAUSE)

    def resume(self) -> None:
        self._send(Control.RESUME)

    def fresh_start(self) -> None:
        self._send(Control.FRESH)

    def stop(self) -> None:
        self._send(Control.STOP)

    def steer(self, text: str, replace_goal: bool = False) -> None:
        self._send(Control.STEER, {"text": text, "replace_goal": replace_goal})

    def set_workers(self, n: int) -> None:
        self._send(Control.WORKERS, {"n": n})


async def poll_controls(ctx: SessionContext, controls: SessionControls) -> None:
    """Controls sent by an attached TUI arrive as rows; apply each once and mark it consumed."""
    db = await anyio.to_thread.run_sync(lambda: connect(ctx.db_path, migrate=False))
    handlers = {
        Control.PAUSE: controls.pause,
        Control.RESUME: controls.resume,
        Control.FRESH: controls.fresh_start,
        Control.STOP: controls.stop,
    }
    try:
        while True:
            rows = await anyio.to_thread.run_sync(q.pending_controls, db, ctx.session_id)
            for row in rows:
                ctx.record.control_consumed(row["seq"])
                payload = json.loads(row["payload"]) if row["payload"] else {}
                source = row["source"]
                if row["kind"] in handlers:
                    handlers[row["kind"]](source=source)
                elif row["kind"] == Control.STEER:
                    controls.steer(payload.get("text", ""), bool(payload.get("replace_goal")), source=source)
                elif row["kind"] == Control.WORKERS:
                    controls.set_workers(int(payload.get("n", ctx.workers)), source=source)
            await anyio.sleep(CONTROL_POLL)
    finally:
        db.conn.close()


SAME_REQUEST = 0.25
"""Seconds within which a second stop signal is the same request (a person's second Ctrl-C comes later)."""


def install_signal_handlers(ctx: SessionContext, controls: SessionControls) -> None:
    """Headless: SIGINT/SIGTERM stop gracefully (again, later: exit now), SIGUSR1 toggles pause, SIGUSR2 fresh start."""
    import asyncio

    loop = asyncio.get_running_loop()
    first: list[float] = []

    def on_stop() -> None:
        # One request may arrive twice at once: GNU `timeout` signals the command and then its process group,
        # and the second copy made every `timeout N formicary run` exit at once, its end unrecorded.
        if first and time.monotonic() - first[0] > SAME_REQUEST:
            os._exit(130)
        if not first:
            first.append(time.monotonic())
            controls.stop(source="signal")

    def on_pause() -> None:
        (controls.resume if ctx.paused else controls.pause)(source="signal")

    loop.add_signal_handler(signal.SIGINT, on_stop)
    loop.add_signal_handler(signal.SIGTERM, on_stop)
    loop.add_signal_handler(signal.SIGUSR1, on_pause)
    loop.add_signal_handler(signal.SIGUSR2, lambda: controls.fresh_start(source="signal"))
