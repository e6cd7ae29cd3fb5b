"""The session screen's controls: keys, modals and palette entries that reach a ``Controls`` object.

A mixin of :class:`~formicary.screens.session.SessionScreen`, kept apart so the screen module stays about
following the store. Controls are hidden when there is nothing to control (read-only or ended sessions).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work

from ..agents.session.controls import Controls, StoreControls
from ..widgets.task_tree import TaskTree
from ..widgets.workers_table import WorkersTable

if TYPE_CHECKING:
    from ..view.views import StatusView

CONTROL_ACTIONS = frozenset(
    {"pause", "resume", "fresh", "stop", "steer", "workers", "more_workers", "fewer_workers"}
)


class ControlActions:
    """Actions of the session screen; expects the attributes the screen sets in ``__init__``."""

    controls: Controls | None
    status: StatusView
    loaded: bool
    can_go_back: bool
    db_path: Path
    session_id: str
    clock: Callable[[], float]
    _paused: bool | None
    _workers: int | None
    app: Any
    notify: Any
    query_one: Any
    refresh_bindings: Any
    dismiss: Any
    run_action: Any
    _show_status: Any
    can_resume: Callable[[], bool]

    @property
    def paused(self) -> bool:
        return self._paused if self._paused is not None else self.status.paused

    @property
    def worker_count(self) -> int | None:
        return self._workers if self._workers is not None else self.status.workers

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Controls are hidden (False) when there is nothing to control; pause and resume take turns on p."""
        if action in CONTROL_ACTIONS:
            if self.controls is None or self.status.ended or not self.loaded:
                return False
            if action == "pause":
                return not self.paused
            if action == "resume":
                return self.paused
        if action == "back":
            return self.can_go_back
        if action == "resume_session":
            return self.can_resume()
        return True

    def _control(self, done: str, name: str, *args: Any, **kwargs: Any) -> None:
        """Call ``controls.<name>``; the engine in this process records it as coming from the TUI."""
        if self.controls is None:
            self.notify("Read-only: this session has no controls here.", severity="warning")
            return
        method = getattr(self.controls, name)
        if isinstance(self.controls, StoreControls):  # a write to the record: off the UI thread
            self._send_control(done, partial(method, *args, **kwargs))
            return
        if "source" in inspect.signature(method).parameters:
            kwargs["source"] = "tui"
        try:
            method(*args, **kwargs)
        except Exception as exc:  # the engine refused: say why, keep the screen
            self.notify(f"{done} failed: {exc}", severity="error")
            return
        self.notify(done)

    @work(thread=True, exit_on_error=False, group="control")
    def _send_control(self, done: str, call: Callable[[], None]) -> None:
        call()
        self.app.call_from_thread(self.notify, done)

    def action_pause(self) -> None:
        self._paused = True
        self._control("Pause requested: workers stop after their current step.", "pause")
        self._after_control()

    def action_resume(self) -> None:
        self._paused = False
        self._control("Resume requested.", "resume")
        self._after_control()

    def action_fresh(self) -> None:
        self._control(
            "Fresh start requested: this cycle ends and a new one plans from the repo.", "fresh_start"
        )

    def action_stop(self) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self._control("Stop requested: the session ends after the current steps.", "stop")

        from .confirm import ConfirmScreen

        self.app.push_screen(
            ConfirmScreen("Stop this session?", "Running steps finish, nothing more starts.", yes="Stop"),
            answered,
        )

    def action_steer(self) -> None:
        def answered(result: tuple[str, bool] | None) -> None:
            if result:
                text, replace_goal = result
                what = "New goal" if replace_goal else "Instructions"
                self._control(
                    f"{what} sent to the next planning round.", "steer", text, replace_goal=replace_goal
                )

        from .steer import SteerScreen

        self.app.push_screen(SteerScreen(self.status.goal), answered)

    def action_workers(self) -> None:
        def answered(n: int | None) -> None:
            if n is not None:
                self._set_workers(n)

        from .workers import WorkersScreen

        self.app.push_screen(WorkersScreen(self.worker_count), answered)

    def action_more_workers(self) -> None:
        self._set_workers((self.worker_count or 0) + 1)

    def action_fewer_workers(self) -> None:
        self._set_workers(max(1, (self.worker_count or 2) - 1))

    def _set_workers(self, n: int) -> None:
        self._workers = n
        self._control(f"Workers set to {n}.", "set_workers", n)
        self._after_control()

    def _after_control(self) -> None:
        self._show_status(self.clock())
        self.refresh_bindings()

    def selected_task(self) -> str | None:
        """The task under the cursor of the focused pane (the tree's node, else the agent row's task)."""
        tree = self.query_one(TaskTree)
        if tree.has_focus and tree.cursor_node is not None and tree.cursor_node.data:
            return tree.cursor_node.data
        table = self.query_one(WorkersTable)
        agent = table.agent(table.selected_agent or "")
        return agent.task_id if agent else None

    def action_detail(self) -> None:
        task_id = self.selected_task()
        if task_id:
            self.open_task(task_id)
        else:
            self.notify("Select a task or an agent working one first.")

    def open_task(self, task_id: str) -> None:
        from .task_detail import TaskDetailScreen

        self.app.push_screen(TaskDetailScreen(self.db_path, self.session_id, task_id))

    def action_back(self) -> None:
        if self.can_go_back:
            self.dismiss()

    def palette_commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        """Entries for the command palette: the same actions as the keys, when they apply."""
        entries = [
            ("pause", "Pause the session", "Workers stop after their current step (p)"),
            ("resume", "Resume the session", "Carry on where it paused (p)"),
            ("fresh", "Force a fresh start", "End this cycle; a new one plans from the repo as it is (f)"),
            ("stop", "Stop the session", "Asks first (s)"),
            ("steer", "Steer the planners", "Add instructions or replace the goal (e)"),
            ("workers", "Set the number of workers", "Workers running at once (w, + and -)"),
            ("detail", "Open the selected task", "Instructions, actions, handoff, diff (enter, d)"),
            ("back", "Back to the sessions", "The sessions browser (escape)"),
        ]
        return [
            (name, help_text, lambda action=action: self.run_action(action))
            for action, name, help_text in entries
            if self.check_action(action, ())
        ]
