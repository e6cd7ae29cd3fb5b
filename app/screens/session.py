"""The main screen: one session's task tree, agents, the selected agent's log, the judge, and the controls.

It is always a reader of the store. A thread worker follows the timeline (``events_since``) through a
:class:`SessionModel` and posts one :class:`Delta` at a time, waiting until the UI has applied it, so a busy
session coalesces into fewer, larger updates instead of a growing queue. Controls go to a ``Controls`` object:
the engine in this process, ``StoreControls`` when attached, or None when browsing read-only.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, Tree
from textual.worker import Worker, WorkerState, get_current_worker

from ..agents.session.controls import Controls
from ..store import queries as q
from ..store.db import connect
from ..view.follow import SessionModel
from ..view.loglines import LogChunk
from ..view.shorten import shorten_at_word
from ..view.stored_log import read_agent_log
from ..view.views import Delta, StatusView
from ..widgets.agent_log import AgentLog
from ..widgets.status_bar import StatusBar
from ..widgets.task_tree import TaskTree
from ..widgets.verdict_log import VerdictLog
from ..widgets.workers_table import WorkersTable
from .commands import SessionCommands
from .resume_action import ResumeAction
from .session_controls import ControlActions

POLL_SECONDS = 0.15
IDLE_POLL_SECONDS = 1.0
BATCH = 5000
LOG_TAIL = 60
"""Actions (or timeline rows) read on the UI thread when an agent is selected: more lines than a log pane shows,
from an indexed query that takes about a millisecond, so the pane is filled in the same frame as the cursor
move. Two thread hand-offs would cost more, each waiting for the scheduler on a loaded machine. A longer
history is then read by a thread and completes the pane when it arrives."""
MODE_LABEL = {"live": "● live", "attached": "⇄ attached", "read-only": "read-only"}


class SessionScreen(ControlActions, ResumeAction, Screen[None]):
    """One session, live, attached or read-only: the same panes in every case."""

    CSS_PATH = "session.tcss"
    COMMANDS: ClassVar[set[Any]] = {SessionCommands}
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-narrow"), (120, "-wide")]
    BINDINGS = [
        Binding("p", "pause", "pause"),
        Binding("p", "resume", "resume"),
        Binding("f", "fresh", "fresh start"),
        Binding("s", "stop", "stop"),
        Binding("e", "steer", "steer"),
        Binding("w", "workers", "workers"),
        Binding("plus,equals_sign", "more_workers", "+1 worker", show=False),
        Binding("minus", "fewer_workers", "-1 worker", show=False),
        Binding("d", "detail", "task detail", show=False),
        Binding("r", "resume_session", "resume"),
        Binding("g", "goal", "goal", show=False),
        Binding("escape", "back", "sessions"),
    ]

    class DeltaReady(Message):
        """The follower's digest of new events (or the first full load)."""

        def __init__(self, delta: Delta) -> None:
            super().__init__()
            self.delta = delta

    class LogLoaded(Message):
        """The stored log of a newly selected agent."""

        def __init__(self, agent_id: str, chunks: list[LogChunk], upto: int) -> None:
            super().__init__()
            self.agent_id, self.chunks, self.upto = agent_id, chunks, upto

    def __init__(
        self,
        db_path: Path,
        session_id: str,
        controls: Controls | None = None,
        mode: str = "read-only",
        *,
        clock: Callable[[], float] = time.time,
        poll_seconds: float = POLL_SECONDS,
        can_go_back: bool = False,
    ) -> None:
        super().__init__()
        self.db_path, self.session_id, self.controls, self.mode = db_path, session_id, controls, mode
        self.clock, self.poll_seconds, self.can_go_back = clock, poll_seconds, can_go_back
        self.status = StatusView()
        self.loaded = False
        """True once the first full load has been applied."""
        self.commit_times: list[float] = []
        self._applied = threading.Event()
        self._paused: bool | None = None  # what the operator last asked for, until the store says otherwise
        self._workers: int | None = None
        self.log_agent: str | None = None
        """The agent whose log is shown; ``log_ready`` once its stored lines are on screen."""
        self.log_ready = False
        self._log_step, self._log_seq = -1, 0
        self._log_since: list[LogChunk] = []
        """What the follower streamed for ``log_agent`` while a read of its stored lines was outstanding."""
        self._log_reading = False
        self._reader: Any = None
        """This screen's read-only connection on the UI thread (for the log tail)."""

    # -- layout ------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header(icon="⁂")
        with Horizontal(id="panes"):
            with Vertical(id="left"):
                yield TaskTree(id="tasks")
                yield VerdictLog(id="verdicts")
            with Vertical(id="right"):
                yield WorkersTable(id="workers")
                yield AgentLog(id="log")
        yield StatusBar(id="status")
        with Horizontal(id="bottom"):
            yield Footer()
            yield Label(MODE_LABEL.get(self.mode, self.mode), id="mode")

    def on_resize(self) -> None:
        self.query_one(Footer).compact = self.size.width < 120
        self._show_goal()

    def _show_goal(self) -> None:
        """The goal in the title bar, shortened at a word to the room beside the title (g shows it whole)."""
        room = self.size.width - len(f"{self.app.title} — ") - 20  # the icon and its mirror on the right
        short = shorten_at_word(self.status.goal, max(room, 10))
        if self.sub_title != short:
            self.sub_title = short

    def action_goal(self) -> None:
        from .goal import GoalScreen

        self.app.push_screen(GoalScreen(" ".join(self.status.goal.split(" ")) or "(no goal recorded yet)"))

    def on_mount(self) -> None:
        self.query_one("#tasks").border_title = "Tasks"
        self.query_one("#verdicts").border_title = "Judge"
        self.query_one("#workers").border_title = "Agents"
        self.query_one("#log").border_title = "Log"
        self.query_one("#mode").set_class(self.mode == "read-only", "-readonly")
        self.query_one(WorkersTable).focus()
        self.query_one(AgentLog).write_line("Waiting for the session to start…")
        self._follow()
        self.set_interval(1.0, self._tick)

    def on_unmount(self) -> None:
        if self._reader is not None:
            self._reader.conn.close()
            self._reader = None

    # -- following the store -----------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="follow")
    def _follow(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled:
            if self.db_path.exists():
                db = connect(self.db_path, readonly=True, migrate=False)
                try:
                    model = SessionModel(self.session_id)
                    try:
                        first = model.load(db)
                    except (LookupError, sqlite3.OperationalError):
                        first = None  # a session just created: its engine has not written it yet
                    if first is not None:
                        self._follow_from(db, model, first, worker)
                        return
                finally:
                    db.conn.close()
            self._sleep(worker, self.poll_seconds)

    def _follow_from(self, db: Any, model: SessionModel, first: Delta, worker: Worker[Any]) -> None:
        if not self._post(first, worker):
            return
        while not worker.is_cancelled:
            events = q.events_since(db, self.session_id, model.seq, limit=BATCH)
            if events and not self._post(model.apply(db, events, watch=self.log_agent or ""), worker):
                return
            if len(events) < BATCH:
                self._sleep(worker, IDLE_POLL_SECONDS if model.status.ended else self.poll_seconds)

    @staticmethod
    def _sleep(worker: Worker[Any], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not worker.is_cancelled and time.monotonic() < deadline:
            time.sleep(min(0.05, seconds))

    def _post(self, delta: Delta, worker: Worker[Any]) -> bool:
        """Hand a delta to the UI and wait until it is applied; False if the follower was cancelled."""
        self._applied.clear()
        if not self.post_message(self.DeltaReady(delta)):
            return False
        while not self._applied.wait(0.05):
            if worker.is_cancelled:
                return False
        return True

    def on_session_screen_delta_ready(self, message: DeltaReady) -> None:
        try:
            with self.app.batch_update():
                self._apply(message.delta)
        finally:
            self._applied.set()

    def _apply(self, delta: Delta) -> None:
        now = self.clock()
        tree, table = self.query_one(TaskTree), self.query_one(WorkersTable)
        if delta.initial:
            tree.reset()
            self.commit_times = []
            self.query_one(VerdictLog).reset()
        tree.add_cycles(delta.cycles)
        tree.upsert(delta.tasks)
        if delta.reset_agents:
            table.reset()
        table.upsert(delta.agents, now)
        self.query_one(VerdictLog).add(delta.verdicts)
        self.commit_times.extend(delta.commit_times)
        before = self.status
        self.status = delta.status
        if self.status.paused == self._paused or self.status.ended:
            self._paused = None
        if delta.status.workers != before.workers:
            self._workers = None
        self._show_status(now)
        title = f"Agents · cycle {self.status.cycle}" if self.status.cycle else "Agents"
        if table.border_title != title:
            table.border_title = title
        if delta.initial:
            self._show_goal()
            self.loaded = True
            roots = [t for t in delta.tasks if t.parent_id is None]
            if roots:
                self.call_after_refresh(tree.move_cursor, tree.current_root())
        elif self.log_agent in delta.lines:
            self._stream(delta.lines[self.log_agent])
        if self.log_agent is None and table.row_count:
            self._select_row(table.selected_agent)
        elif delta.initial and not table.row_count:
            self.query_one(AgentLog).show(
                None, ["No agent in this cycle yet. Tab to the tree to read a task's log."]
            )
        if (before.ended, before.paused) != (self.status.ended, self.status.paused) or delta.initial:
            self.refresh_bindings()
            self.query_one("#mode", Label).update(self._mode_text())
        if not delta.initial:
            for severity, text in delta.notices:
                self.notify(text, severity=severity)  # type: ignore[arg-type]
            self._alert(delta, before)

    def _alert(self, delta: Delta, before: StatusView) -> None:
        """Ring or notify (``[ui] notify``) when the judge decides or the session ends."""
        for verdict in delta.verdicts:
            self.app.alert(
                "formicary: the judge decided",
                f"cycle {verdict.cycle}: {verdict.decision} — {verdict.reason}",
            )
        if self.status.ended and not before.ended:
            reason = f": {self.status.stop_reason}" if self.status.stop_reason else ""
            self.app.alert("formicary: the session ended", f"{self.status.session_status}{reason}")

    def _tick(self) -> None:
        now = self.clock()
        self.query_one(WorkersTable).tick(now)
        self._show_status(now)

    def _show_status(self, now: float) -> None:
        status = self.status
        if self._paused is not None and not status.ended:
            status = replace(status, paused=self._paused)
        if self._workers is not None:
            status = replace(status, workers=self._workers)
        self.query_one(StatusBar).show(status, now, self.commit_times, self.mode)

    def _mode_text(self) -> str:
        if self.status.ended:
            return f"{self.status.session_status} · read-only"
        return MODE_LABEL.get(self.mode, self.mode)

    # -- the log pane ------------------------------------------------------------------------------

    def _title(self, agent_id: str | None, task_title: str = "") -> str:
        """``name · task`` for the log pane's border (the name is known while the agent is in the table)."""
        agent = self.query_one(WorkersTable).agent(agent_id) if agent_id else None
        parts = [agent.name if agent else "", task_title or (agent.task_title if agent else "")]
        return " · ".join(p for p in parts if p)

    def _select_row(self, agent_id: str | None) -> None:
        self.select_agent(agent_id, self._title(agent_id))

    def select_agent(self, agent_id: str | None, title: str = "") -> None:
        """Show an agent's log: its newest stored lines at once, a longer history from a thread, then what follows.

        The old lines stay until the new ones are in, so the pane is replaced in one repaint.
        """
        if agent_id is not None and agent_id == self.log_agent:
            return
        self.log_agent, self.log_ready, self._log_since = agent_id, False, []
        log = self.query_one(AgentLog)
        log.border_title = f"Log · {title}" if title else "Log"
        if agent_id is None:
            log.show(None, ["No agent has worked on this yet."])
            return
        self._log_reading = True
        try:
            tail = read_agent_log(self._read_connection(), self.session_id, agent_id, limit=LOG_TAIL)
        except sqlite3.Error:
            tail = None  # the record is not there yet: the thread reports it
        if tail is not None:
            self._show_log(agent_id, tail.chunks, tail.upto)
            self._log_reading = not tail.complete
        if self._log_reading:
            self._load_log(agent_id)

    def _read_connection(self) -> Any:
        if self._reader is None:
            self._reader = connect(self.db_path, readonly=True, migrate=False)
        return self._reader

    @work(thread=True, exclusive=True, exit_on_error=False, group="log")
    def _load_log(self, agent_id: str) -> None:
        db = connect(self.db_path, readonly=True, migrate=False)
        try:
            chunks, upto, _ = read_agent_log(db, self.session_id, agent_id)
        finally:
            db.conn.close()
        self.post_message(self.LogLoaded(agent_id, chunks, upto))

    def on_session_screen_log_loaded(self, message: LogLoaded) -> None:
        if message.agent_id == self.log_agent:
            self._log_reading = False
            self._show_log(message.agent_id, message.chunks, message.upto)

    def _show_log(self, agent_id: str, chunks: list[LogChunk], upto: int) -> None:
        """Fill the pane with stored lines and what was streamed since that they do not hold yet."""
        steps = [c.step for c in chunks if c.step is not None]
        self._log_step, self._log_seq = max(steps, default=-1), upto
        lines = [line for chunk in chunks for line in chunk.lines]
        lines += self._fresh_lines(self._log_since)
        if not self._log_reading:
            self._log_since = []
        self.query_one(AgentLog).show(agent_id, lines)
        self.log_ready = True

    def _stream(self, chunks: list[LogChunk]) -> None:
        if self._log_reading:
            self._log_since.extend(chunks)
        if self.log_ready:
            self.query_one(AgentLog).append(self._fresh_lines(chunks))

    def _fresh_lines(self, chunks: list[LogChunk]) -> list[str]:
        """Lines not already shown: steps after the last shown step, other lines after the loaded ``seq``."""
        out: list[str] = []
        for chunk in chunks:
            if chunk.step is not None:
                if chunk.step <= self._log_step:
                    continue
                self._log_step = chunk.step
            elif chunk.seq <= self._log_seq:
                continue
            out.extend(chunk.lines)
        return out

    def on_workers_table_highlighted(self, event: WorkersTable.Highlighted) -> None:
        if event.table.has_focus or self.log_agent is None:
            self._select_row(event.agent_id)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        tree = self.query_one(TaskTree)
        task = tree.task(event.node.data) if event.node.data else None
        if task is not None and tree.has_focus:
            self.select_agent(task.agent_id, self._title(task.agent_id, task.title))

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        """The log follows the focused pane's selection."""
        tree, table = self.query_one(TaskTree), self.query_one(WorkersTable)
        if event.widget is tree:
            if tree.cursor_node is None or not tree.cursor_node.data:
                node = tree.current_root()  # start on this cycle's planner rather than above the tree
                if node is not None:
                    tree.move_cursor(node)
            elif (task := tree.task(tree.cursor_node.data)) is not None:
                self.select_agent(task.agent_id, self._title(task.agent_id, task.title))
        elif event.widget is table and table.selected_agent:
            self._select_row(table.selected_agent)

    def on_workers_table_selected(self, event: WorkersTable.Selected) -> None:
        agent = event.table.agent(event.agent_id)
        if agent is not None and agent.task_id:
            self.open_task(agent.task_id)
        elif agent is not None:
            self.notify(f"The {agent.role} works on the whole cycle: its log is below.")

    def on_tree_node_selected(self, event: Tree.NodeSelected[str]) -> None:
        if event.node.data:
            self.open_task(event.node.data)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        group, error = event.worker.group, event.worker.error
        if group == "follow":
            self.notify(f"Cannot read the record: {error}; retrying", severity="error")
            self.set_timer(2.0, self._follow)
        elif group == "control":
            self.notify(f"The control was not sent: {error}", severity="error")
        else:
            self.notify(f"{group}: {error}", severity="error")
