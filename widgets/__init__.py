"""Textual widgets, one per module, each with its .tcss beside it."""

from __future__ import annotations

from pathlib import Path


def stylesheets() -> list[Path]:
    """Every widget's .tcss, for an App's ``CSS_PATH`` (widgets cannot load a file of their own)."""
    return sorted(Path(__file__).parent.glob("*.tcss"))
