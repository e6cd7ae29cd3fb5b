"""Telling an operator who looks away that something happened: the terminal bell, a desktop notification.

Called by the session screen when the judge decides or a session ends, per ``[ui] notify``. The text comes
from the record (a model's reason): control characters are dropped before it reaches a terminal sequence or a
command line.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from .summary import clean

MODES = ("off", "bell", "desktop")


def alert(app: Any, mode: str, title: str, body: str) -> bool:
    """Ring and/or notify as ``mode`` says; True if anything was sent."""
    if mode not in ("bell", "desktop"):
        return False
    app.bell()
    if mode == "desktop":
        title, body = _flat(title, 80), _flat(body, 240)
        driver = getattr(app, "_driver", None)
        if driver is not None and hasattr(driver, "write"):
            driver.write(
                f"\x1b]9;{title}: {body}\x07"
            )  # OSC 9: terminals that support it raise a notification
        notify_send(title, body)
    return True


def _flat(text: str, width: int) -> str:
    flat = " ".join(clean(text).replace(";", ",").split())
    return flat[:width]


def notify_send(title: str, body: str) -> bool:
    """A desktop notification through ``notify-send`` when the machine has one (not waited for)."""
    exe = shutil.which("notify-send")
    if exe is None:
        return False
    try:
        subprocess.Popen(
            [exe, "--app-name=formicary", "--", title, body],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        return False
    return True
