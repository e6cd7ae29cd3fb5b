"""The judge's decisions, one entry per cycle: verdict, reason and the notes carried to the next cycle."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import RichLog

from ..store.sanitize import safe_text
from ..view import formatting as fmt

if TYPE_CHECKING:
    from ..view.views import VerdictView

EMPTY = "No verdict yet: the judge speaks at the end of each cycle."


class VerdictLog(RichLog):
    """Few entries, so rich wrapped text is affordable here (unlike the agent log)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, wrap=True, markup=False, highlight=False, max_lines=500, min_width=20)
        self.verdicts: list[VerdictView] = []
        self._width = 0

    @property
    def count(self) -> int:
        return len(self.verdicts)

    def on_mount(self) -> None:
        self.write(Text(EMPTY, style="grey62"))

    def on_resize(self) -> None:
        """RichLog wraps when it writes; rewrite so the entries fit the new width."""
        if self.size.width != self._width and self.verdicts:
            self._width = self.size.width
            self.clear()
            self._write(self.verdicts)

    def reset(self) -> None:
        self.verdicts = []
        self.clear()
        self.write(Text(EMPTY, style="grey62"))

    def add(self, verdicts: list[VerdictView]) -> None:
        if not verdicts:
            return
        if not self.verdicts:
            self.clear()
        self.verdicts.extend(verdicts)
        self._write(verdicts)

    def _write(self, verdicts: list[VerdictView]) -> None:
        for v in verdicts:
            entry = Text()
            entry.append(f"Cycle {v.cycle} ", style="bold")
            entry.append(f"{v.decision}", style=fmt.DECISION_STYLE.get(v.decision, "bold"))
            entry.append(f"  {safe_text(v.reason)}")
            if v.notes:
                entry.append(f"\n  notes: {safe_text(v.notes)}", style="grey70")
            self.write(entry)
