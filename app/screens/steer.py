"""Steering: instructions for the next planning round, or a new goal. Dismissed with (text, replace_goal)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Label, TextArea


class SteerScreen(ModalScreen[tuple[str, bool] | None]):
    """The planners read the text at their next round; with "replace the goal" it becomes the goal."""

    CSS_PATH = "steer.tcss"
    BINDINGS = [
        Binding("ctrl+s", "send", "send", priority=True),
        Binding("escape", "cancel", "cancel"),
    ]

    def __init__(self, goal: str) -> None:
        super().__init__()
        self.goal = goal

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Steer the session", id="title")
            yield Label(f"Goal: {self.goal}", id="goal")
            yield TextArea(id="text", soft_wrap=True, tab_behavior="focus")
            yield Checkbox("Replace the goal with this text", id="replace")
            yield Label("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Send (ctrl+s)", variant="primary", id="send")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one(TextArea).focus()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        area = self.query_one(TextArea)
        if event.value and not area.text.strip():
            area.load_text(self.goal)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "send":
            self.action_send()
        else:
            self.dismiss(None)

    def action_send(self) -> None:
        text = self.query_one(TextArea).text.strip()
        if not text:
            self.query_one("#error", Label).update("Write something for the planners first.")
            return
        self.dismiss((text, self.query_one(Checkbox).value))

    def action_cancel(self) -> None:
        self.dismiss(None)
