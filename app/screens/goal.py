"""The whole goal of a session, one key away from the title bar that shows it shortened."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static


class GoalScreen(ModalScreen[None]):
    """Shows ``goal`` in full (wrapped, scrollable); any of escape, enter or g closes it."""

    CSS_PATH = "goal.tcss"
    BINDINGS = [Binding("escape,enter,g,q", "close", "close")]

    def __init__(self, goal: str) -> None:
        super().__init__()
        self.goal = goal

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Goal", id="title")
            with VerticalScroll(id="goal-scroll"):
                yield Static(self.goal, id="goal-text", markup=False)
            yield Label("escape closes", id="hint")

    def action_close(self) -> None:
        self.dismiss(None)
