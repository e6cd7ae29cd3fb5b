"""A fresh start for a worker that loops: its edits undone, its conversation back to the first prompt, plus a
short list of what it tried and how each try failed.

Measured (bench/effectiveness.py, the 1.5B model): a worker whose first ``tableize`` failed its test sent the
same definition four more times, nudges and hotter sampling notwithstanding — its own failed code, in its
context, was the strongest pull on its next reply. Started over from the task with only a line per failed try,
the model sees the specification again instead of its mistake (and the prompt is shorter, so the call is
cheaper). The same reason the engine starts each cycle fresh, applied within one worker.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

from ..tools import confine

MAX_RESTARTS = 2
TRIES_SHOWN = 3
CODE_CHARS = 400


def snapshot(root: str, path: str) -> bytes | None:
    """A file's bytes (None: it does not exist or cannot be read)."""
    try:
        real, _ = confine.resolve(root, path)
        with open(real, "rb") as fh:
            return fh.read()
    except (confine.ActionFailed, OSError):
        return None


def restore(root: str, path: str, data: bytes | None) -> None:
    """Put back what :func:`snapshot` read (remove the file if it did not exist), as the tools write: confined,
    and recorded for the commit."""
    if data is not None:
        confine.put_bytes(root, path, data)
        return
    with contextlib.suppress(OSError):
        confine.put_bytes(root, path, None)


@dataclass
class Attempts:
    """The worker's original files (before its first edit of each) and its failed tries."""

    originals: dict[str, bytes | None] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    restarts: int = 0
    last: tuple[str, bytes | None] | None = None
    """The file the current edit changes, as it was just before (only when asked: ``keep_last``)."""

    def before_edit(self, root: str, path: str, keep_last: bool = False) -> None:
        """Blocking: remember ``path`` as it was before this worker first touched it (and, with ``keep_last``,
        as it is now)."""
        key = os.path.normpath(str(path))
        if key not in self.originals:
            self.originals[key] = snapshot(root, key)
        self.last = (key, snapshot(root, key)) if keep_last else None

    def failed_try(self, action: Any, error: str) -> None:
        code = getattr(action, "content", "") or getattr(action, "replace", "")
        code = code if len(code) <= CODE_CHARS else code[:CODE_CHARS] + "\n..."
        self.failed.append(
            f"{action.name} {getattr(action, 'function', '') or action.path}:\n{code}\n-> {error}"
        )

    def can_restart(self) -> bool:
        return self.restarts < MAX_RESTARTS

    def undo(self, root: str) -> None:
        """Blocking: every file back as it was before the worker's edits."""
        for path, data in self.originals.items():
            with contextlib.suppress(confine.ActionFailed, OSError):
                restore(root, path, data)
        self.originals.clear()

    def note(self) -> str:
        """What goes under the first prompt after a restart."""
        shown = self.failed[-TRIES_SHOWN:]
        tries = "\n\n".join(f"TRY {i}: {t}" for i, t in enumerate(shown, 1))
        return (
            "\n\nYOU ARE STARTING THIS TASK AGAIN: your earlier edits were undone because you repeated yourself."
            " These tries FAILED; do not send them again, write something different:\n" + tries
        )
