"""Controls for a session: the same small API whether the engine is in this process or another one.

An attached TUI has no engine object; it writes control rows to the store and the running engine polls them
(one indexed query every half second), so every control is recorded whichever way it arrives.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

from ...store.db import connect, now


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


class StoreControls:
    """Controls for a session running in another process, sent through the ``controls`` table."""

    def __init__(self, db_path: Path | str, session_id: str, source: str = "attach") -> None:
        self.db_path = Path(db_path)
        self.session_id = session_id
        self.source = source

    def _send(self, kind: str, payload: dict | None = None) -> None:
        db = connect(self.db_path, migrate=False)
        try:
            db.execute(
                "INSERT INTO controls (session_id, kind, payload, source, created_at) VALUES (?, ?, ?, ?, ?)",
                [self.session_id, kind, json.dumps(payload) if payload else None, self.source, now()],
            )
        finally:
            db.conn.close()

    def pause(self) -> None:
        self._send("pause")

    def resume(self) -> None:
        self._send("resume")

    def fresh_start(self) -> None:
        self._send("fresh")

    def stop(self) -> None:
        self._send("stop")

    def steer(self, text: str, replace_goal: bool = False) -> None:
        self._send("steer", {"text": text, "replace_goal": replace_goal})

    def set_workers(self, n: int) -> None:
        self._send("workers", {"n": n})
