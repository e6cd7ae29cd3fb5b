"""Controls for a session: the same small API whether the engine is in this process or another one.

An attached TUI has no engine object; it writes control rows to the store and the running engine polls them
(one indexed query every half second), so every control is recorded whichever way it arrives.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from ..status import Control
from .record import send_control


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
