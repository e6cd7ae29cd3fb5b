"""Shortening text for a one-line place (the title bar) at a word boundary, never mid-word."""

from __future__ import annotations

ELLIPSIS = "…"


def shorten_at_word(text: str, width: int) -> str:
    """``text`` on one line in at most ``width`` cells, cut after the last whole word that fits, with "…".

    A first word longer than the room is the one case cut inside a word (there is no earlier boundary).
    """
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    if width <= 1:
        return ELLIPSIS[:width]
    room = flat[: width - 1]
    if flat[width - 1] != " " and " " in room:
        room = room[: room.rindex(" ")]
    return room.rstrip(" ,;:.-—") + ELLIPSIS
