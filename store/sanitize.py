"""Terminal safety: one function strips control characters from any text before it is shown to the operator.

Why: model replies, command output and repository files are hostile input. Written raw to a terminal, ``ESC ]52``
sets the clipboard, ``ESC ]0`` the window title, ``ESC [2J`` clears the screen, ``\\r`` hides what came before on
the line, and bidirectional overrides reorder what the operator reads. Headless output and the TUI's log, detail
and diff views all call :func:`safe_text`; newline and tab are kept.
"""

from __future__ import annotations

import re

_SEQUENCE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: cursor, erase, colour…
    r"|\x1b\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC: title, clipboard, hyperlinks
    r"|\x1b[PX^_][^\x1b\x9c]*(?:\x1b\\|\x9c)?"  # DCS, SOS, PM, APC strings
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
    r"|\x1b[ -/]*[0-~]?"  # any other escape
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""C0 (but newline and tab), DEL, C1, and bidirectional embedding/override/isolate characters."""


def safe_text(text: str) -> str:
    """``text`` without escape sequences and control characters (newline and tab kept; ``\\r\\n`` → ``\\n``)."""
    if not _CONTROL.search(text):
        return text
    text = _SEQUENCE.sub("", text.replace("\r\n", "\n"))
    return _CONTROL.sub("", text)
