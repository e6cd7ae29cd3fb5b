"""Short text forms shared by the widgets: durations, token counts, status icons and their colours.

Status is always shown by an icon AND a colour, so it survives a monochrome terminal.
"""

from __future__ import annotations

from ..store.sanitize import safe_text

STATUS_ICON = {
    "pending": "○",
    "running": "◐",
    "done": "✔",
    "failed": "✘",
    "cancelled": "⊘",
    "abandoned": "⊘",
    "stopped": "■",
    "paused": "‖",
}
STATUS_STYLE = {
    "pending": "grey62",
    "running": "bold dark_orange",
    "done": "green",
    "failed": "bold red",
    "cancelled": "grey50",
    "abandoned": "grey50",
    "stopped": "grey62",
    "paused": "bold yellow",
}
DECISION_STYLE = {"continue": "bold dark_orange", "done": "bold green"}


def icon(status: str) -> str:
    return STATUS_ICON.get(status, "·")


def style(status: str) -> str:
    return STATUS_STYLE.get(status, "")


def tokens(n: int) -> str:
    """1234 → 1.2k, 3456789 → 3.5M."""
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 1000:
        return f"{n / 1000:.1f}k"
    return str(n)


def duration(seconds: float | None) -> str:
    """Seconds as 42s, 3m07s or 2h05m."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def clip(text: str, width: int) -> str:
    """One line of at most ``width`` characters, control characters stripped (agents wrote most of these)."""
    text = " ".join(safe_text(text).split())
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"
