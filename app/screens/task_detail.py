"""One task in full: instructions, handoff, every action of its agents, and the diff of what landed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Label, RichLog, Static, TabbedContent, TabPane

from ..store import queries as q
from ..store.db import connect
from ..store.sanitize import safe_text
from ..view import formatting as fmt
from ..view.loglines import action_row_chunk, agent_header, ended_line
from ..widgets.agent_log import AgentLog

MAX_DIFF_LINES = 5000


@dataclass
class TaskDetail:
    """Everything the screen shows, read in one go off the UI thread."""

    task: dict[str, Any]
    parent_title: str | None
    cycle: int | None
    repo: str
    log: list[str]
    commits: list[dict[str, Any]] = field(default_factory=list)


def read_detail(db_path: Path, session_id: str, task_id: str) -> TaskDetail:
    db = connect(db_path, readonly=True, migrate=False)
    try:
        rows = q.tasks_by_ids(db, [task_id])
        if not rows:
            raise LookupError(f"task {task_id} is not in the record")
        task = rows[0]
        parent = q.tasks_by_ids(db, [task["parent_id"]]) if task["parent_id"] else []
        session = q.get_session(db, session_id) or {"repo": ""}
        cycle = next((c["number"] for c in q.cycles(db, session_id) if c["id"] == task["cycle_id"]), None)
        log: list[str] = []
        for agent in q.task_agents(db, session_id, task_id):
            log.extend(agent_header(agent, None))
            for row in q.last_actions_of(db, agent["id"], limit=2000):
                log.extend(action_row_chunk(row).lines)
            if agent["ended_at"]:
                log.append(
                    ended_line(
                        agent["status"], agent["steps"], agent["prompt_tokens"], agent["completion_tokens"]
                    )
                )
        return TaskDetail(
            task=task,
            parent_title=parent[0]["title"] if parent else None,
            cycle=cycle,
            repo=session["repo"],
            log=log,
            commits=q.task_commits(db, session_id, task_id),
        )
    finally:
        db.conn.close()


GIT_SHOW_TIMEOUT = 30.0


def git_show(repo: str, sha: str) -> str:
    """``git show`` of a landed commit, or one line saying why it cannot be shown (run from a thread)."""
    from ..agents.git.run import git_sync

    if not repo or not Path(repo).is_dir():
        return f"The repository is not at {repo or '(unknown)'} any more, so the diff cannot be shown."
    result = git_sync(
        "show", "--stat", "--patch", "--no-color", "--format=fuller", sha, cwd=repo, timeout=GIT_SHOW_TIMEOUT
    )
    if result.rc != 0:
        return f"git show {sha[:10]} failed: {result.err.strip().splitlines()[-1] if result.err.strip() else result.rc}"
    return result.out


def diff_text(diff: str) -> Text:
    text = Text()
    lines = safe_text(diff).splitlines()
    for line in lines[:MAX_DIFF_LINES]:
        style = ""
        if line.startswith("+") and not line.startswith("+++"):
            style = "green"
        elif line.startswith("-") and not line.startswith("---"):
            style = "red"
        elif line.startswith("@@"):
            style = "cyan"
        elif line.startswith(("diff --git", "commit ")):
            style = "bold"
        text.append(line + "\n", style=style)
    if len(lines) > MAX_DIFF_LINES:
        text.append(f"… {len(lines) - MAX_DIFF_LINES} more lines\n", style="grey62")
    return text


def _handoff(raw: str | None) -> list[tuple[str, str]]:
    if not raw:
        return []
    try:
        data = json.loads(raw)
    except ValueError:
        return [("handoff", raw)]
    if not isinstance(data, dict):
        return [("handoff", str(data))]
    out = []
    for key, value in data.items():
        if isinstance(value, list):
            value = "\n".join(f"• {v}" for v in value)
        if value:
            out.append((key, str(value)))
    return out


def task_text(d: TaskDetail) -> Text:
    t = {k: safe_text(v) if isinstance(v, str) else v for k, v in d.task.items()}  # agents wrote these
    text = Text()
    text.append(f"{fmt.icon(t['status'])} {t['status']}", style=fmt.style(t["status"]))
    text.append(
        f"   {t['kind']}   attempt {t['attempts']}   cycle {d.cycle if d.cycle is not None else '?'}\n"
    )
    if d.parent_title:
        text.append("Planned by  ", style="bold")
        text.append(safe_text(d.parent_title) + "\n")
    try:
        files = ", ".join(json.loads(t["files"] or "[]"))
    except (ValueError, TypeError):
        files = str(t["files"])
    if files:
        text.append("Files       ", style="bold")
        text.append(files + "\n")
    if t["check_cmd"]:
        text.append("Check       ", style="bold")
        text.append(t["check_cmd"] + "\n")
    text.append("\nInstructions\n", style="bold underline")
    text.append((t["instructions"] or "(none)") + "\n")
    for key, value in _handoff(t["handoff"]):
        text.append(f"\nHandoff: {key}\n", style="bold underline")
        text.append(value + "\n")
    if t["error"]:
        text.append("\nError\n", style="bold red")
        text.append(t["error"] + "\n")
    if d.commits:
        text.append("\nCommits\n", style="bold underline")
        for c in d.commits:
            landed = (c["integrated_sha"] or "")[:10] or "-"
            text.append(
                f"{c['status']:<10} {c['sha'][:10]} → {landed}  branch {c['branch']}  "
                f"{c['retries']} retries  {c['conflicts']} conflicts\n"
            )
            if c["error"]:
                text.append(f"  {safe_text(c['error'])}\n", style="red")
    return text


class TaskDetailScreen(Screen[None]):
    """Opened with enter on a tree node or an agent row; escape goes back."""

    CSS_PATH = "task_detail.tcss"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("1", "tab('task')", "task"),
        Binding("2", "tab('actions')", "actions"),
        Binding("3", "tab('diff')", "diff"),
    ]

    class Loaded(Message):
        def __init__(self, detail: TaskDetail) -> None:
            super().__init__()
            self.detail = detail

    class DiffLoaded(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, db_path: Path, session_id: str, task_id: str) -> None:
        super().__init__()
        self.db_path, self.session_id, self.task_id = db_path, session_id, task_id

    def compose(self) -> ComposeResult:
        yield Label("Loading…", id="title")
        with TabbedContent(id="tabs"):
            with TabPane("Task", id="task"), VerticalScroll():
                yield Static(id="task-text")
            with TabPane("Actions", id="actions"):
                yield AgentLog(id="actions-log")
            with TabPane("Diff", id="diff"):
                yield RichLog(id="diff-log", wrap=False, highlight=False, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="task-detail")
    def _load(self) -> None:
        detail = read_detail(self.db_path, self.session_id, self.task_id)
        self.post_message(self.Loaded(detail))
        landed = [c["integrated_sha"] for c in detail.commits if c["integrated_sha"]]
        if not landed:
            self.post_message(self.DiffLoaded("Nothing from this task has landed, so there is no diff."))
            return
        self.post_message(self.DiffLoaded("\n".join(git_show(detail.repo, sha) for sha in landed)))

    def on_task_detail_screen_loaded(self, message: Loaded) -> None:
        d = message.detail
        self.query_one("#title", Label).update(Text.assemble((d.task["title"], "bold")))
        self.query_one("#task-text", Static).update(task_text(d))
        self.query_one("#actions-log", AgentLog).show(None, d.log or ["No agent has worked this task yet."])

    def on_task_detail_screen_diff_loaded(self, message: DiffLoaded) -> None:
        log = self.query_one("#diff-log", RichLog)
        log.clear()
        log.write(diff_text(message.text))

    def on_worker_state_changed(self, event: Any) -> None:
        if event.worker.group == "task-detail" and event.worker.error is not None:
            self.query_one("#title", Label).update(f"Cannot read this task: {event.worker.error}")

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
