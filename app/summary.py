"""What a session left behind, read from the record: the end-of-session summary and ``formicary show``.

One reader builds a :class:`Summary` (branch, commits landed, tasks, check results, tokens per role, wall
time); :func:`render` turns it into the lines printed when a session ends, however it ends (TUI quit, headless
finish, Ctrl-C, a budget), and by ``formicary show`` for any past session. The exact git commands to review
and merge the branch are part of it: the operator should never have to work out where the work went.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlite_utils import Database

from .store import queries as q
from .view.shorten import shorten_at_word

NO_CHECK = "no check"


@dataclass(frozen=True)
class CheckResult:
    """One run of the repository's check (tests): when, whether it passed, its last line."""

    passed: bool | None
    """True/False when the exit status is known, None when only the output was kept."""
    line: str

    def text(self) -> str:
        mark = {True: "passed", False: "FAILED", None: "ran"}[self.passed]
        return f"{mark} — {self.line}" if self.line else mark


@dataclass
class Summary:
    session_id: str
    goal: str
    repo: str
    branch: str
    base_sha: str | None
    status: str
    stop_reason: str | None
    started_at: str
    ended_at: str | None
    cycles: int = 0
    commits: int = 0
    commits_failed: int = 0
    tasks: dict[str, int] = field(default_factory=dict)
    """Work tasks by status (done, failed, pending, running, cancelled)."""
    tokens: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Prompt and completion tokens per role."""
    check_command: str | None = None
    check_source: str | None = None
    gate_passed: int = 0
    gate_refused: int = 0
    check_start: CheckResult | None = None
    check_end: CheckResult | None = None
    last_verdict: str | None = None
    last_reason: str | None = None

    def wall_seconds(self, now: datetime | None = None) -> float:
        start = datetime.fromisoformat(self.started_at)
        end = datetime.fromisoformat(self.ended_at) if self.ended_at else (now or datetime.now(UTC))
        return max(0.0, (end - start).total_seconds())

    @property
    def total_tokens(self) -> int:
        return sum(p + c for p, c in self.tokens.values())


def load_summary(db: Database, session_id: str) -> Summary:
    """The summary of ``session_id``; LookupError if the record has no such session."""
    row = q.get_session(db, session_id)
    if row is None:
        raise LookupError(f"no session {session_id}")
    base = next(db.query("SELECT base_sha FROM sessions WHERE id = ?", [session_id]))["base_sha"]
    s = Summary(
        session_id=row["id"],
        goal=row["goal"],
        repo=row["repo"],
        branch=row["branch"],
        base_sha=base,
        status=row["status"],
        stop_reason=row["stop_reason"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        cycles=row["cycles"],
        commits=row["commits"],
        last_verdict=row["last_verdict"],
    )
    s.commits_failed = _count(
        db, "SELECT COUNT(*) n FROM commits WHERE session_id = ? AND status = 'failed'", session_id
    )
    for r in db.query(
        "SELECT status, COUNT(*) n FROM tasks WHERE session_id = ? AND kind = 'work' GROUP BY status",
        [session_id],
    ):
        s.tasks[r["status"]] = r["n"]
    for r in db.query(
        "SELECT role, COALESCE(SUM(prompt_tokens),0) p, COALESCE(SUM(completion_tokens),0) c "
        "FROM llm_calls WHERE session_id = ? GROUP BY role ORDER BY role",
        [session_id],
    ):
        s.tokens[r["role"]] = (int(r["p"]), int(r["c"]))
    verdicts = q.verdicts(db, session_id)
    if verdicts:
        s.last_reason = verdicts[-1]["reason"]
    s.check_start, s.check_end = check_results(db, session_id, verdicts, base)
    columns = db["sessions"].columns_dict
    if "check_command" in columns:
        extra = next(db.query("SELECT check_command, check_source FROM sessions WHERE id = ?", [session_id]))
        s.check_command, s.check_source = extra["check_command"], extra["check_source"]
    for r in _gate_rows(db, session_id):
        s.gate_passed += r["verdict"] == "passed"
        s.gate_refused += r["verdict"] == "refused"
    return s


def _count(db: Database, sql: str, session_id: str) -> int:
    return int(next(db.query(sql, [session_id]))["n"])


def _last_line(text: str | None, width: int = 100) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return _one_line(lines[-1], width) if lines else ""


def check_results(
    db: Database, session_id: str, verdicts: list[dict[str, Any]], base: str | None = None
) -> tuple[CheckResult | None, CheckResult | None]:
    """The check's result when the session started and when it last ran, or None where there was none.

    Start: the landing gate's check of ``base``, the commit the session started from (a gate that did not need
    the tip's result has none; a later tip's result is not the start's), else what cycle 1's judge was told.
    End: the check the judge saw last (its exit status from the timeline), else the check of the last tree the
    gate let land.
    """
    gates = _gate_rows(db, session_id)
    start = next(
        (
            CheckResult(r["tip_exit"] == 0, "")
            for r in gates
            if r.get("tip_exit") is not None and (base is None or r.get("tip") == base)
        ),
        None,
    )
    if start is None:  # the gate did not need the base's result; cycle 1's judge knew it
        for row in db.query(
            f"SELECT data FROM {q.log_table(db)} WHERE session_id = ? AND kind = 'verdict' ORDER BY seq LIMIT 1",
            [session_id],
        ):
            data = json.loads(row["data"] or "{}")
            first = data.get("start_exit") if isinstance(data, dict) and data.get("number") == 1 else None
            start = CheckResult(first == 0, "") if isinstance(first, int) else None
    end = None
    with_output = [v for v in verdicts if v.get("check_output")]
    last_exit = None
    for row in db.query(
        f"SELECT data FROM {q.log_table(db)} WHERE session_id = ? AND kind = 'verdict' ORDER BY seq DESC LIMIT 1",
        [session_id],
    ):
        data = json.loads(row["data"] or "{}")
        last_exit = data.get("check_exit") if isinstance(data, dict) else None
    if not isinstance(last_exit, int):
        last_exit = None
    if with_output or last_exit is not None:
        line = _last_line(with_output[-1]["check_output"]) if with_output else ""
        end = CheckResult(None if last_exit is None else last_exit == 0, line)
    else:
        landed = [r for r in gates if r["verdict"] == "passed" and r.get("check_exit") is not None]
        if landed:
            end = CheckResult(landed[-1]["check_exit"] == 0, "the last tree that landed")
    return start, end


def _gate_rows(db: Database, session_id: str) -> list[dict[str, Any]]:
    """The landing gate's decisions, oldest first (empty for a record from before the gate)."""
    if "gates" not in db.table_names():
        return []
    return list(db.query("SELECT * FROM gates WHERE session_id = ? ORDER BY created_at", [session_id]))


def duration_text(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def review_commands(s: Summary) -> list[str]:
    """The git commands that review the session's branch and merge it into the operator's own branch."""
    repo, branch = shlex.quote(clean(s.repo)), shlex.quote(clean(s.branch))
    base = shlex.quote(clean(s.base_sha)[:12]) if s.base_sha else None
    since = f"{base}..{branch}" if base else branch
    lines = [
        f"git -C {repo} log --oneline {since}",
        f"git -C {repo} diff --stat {base}...{branch}" if base else f"git -C {repo} show --stat {branch}",
        f"git -C {repo} merge --no-ff {branch}   # from your own branch, once reviewed",
    ]
    return lines


def render(s: Summary, now: datetime | None = None) -> list[str]:
    """The summary as plain lines (no colour: it is printed after the TUI has left the screen)."""
    t = s.tasks
    done, failed = t.get("done", 0), t.get("failed", 0)
    left = sum(n for k, n in t.items() if k not in ("done", "failed"))
    reason = f" — {_one_line(s.stop_reason, 160)}" if s.stop_reason else ""
    none = "not run" if s.check_command else NO_CHECK
    lines = [
        f"session {s.session_id} {s.status}{reason}",
        f"  goal      {_one_line(s.goal, 100)}",
        f"  branch    {clean(s.branch)}  (in {clean(s.repo)})",
        f"  commits   {s.commits} landed" + (f", {s.commits_failed} not landed" if s.commits_failed else ""),
        f"  tasks     {done} done, {failed} failed" + (f", {left} not finished" if left else ""),
        f"  check     start: {s.check_start.text() if s.check_start else none}"
        f" · end: {s.check_end.text() if s.check_end else none}"
        + (f"  ({_one_line(s.check_command, 60)}, {s.check_source or 'config'})" if s.check_command else ""),
        *(
            [f"  gate      {s.gate_passed} passed, {s.gate_refused} refused"]
            if s.gate_passed + s.gate_refused
            else []
        ),
        f"  cycles    {s.cycles}" + (f" · last verdict: {s.last_verdict}" if s.last_verdict else ""),
        f"  wall time {duration_text(s.wall_seconds(now))}",
    ]
    if s.tokens:
        per_role = ", ".join(f"{clean(role)} {p + c:,}" for role, (p, c) in s.tokens.items())
        lines.append(f"  tokens    {s.total_tokens:,} ({per_role})")
    else:
        lines.append("  tokens    0")
    if s.commits:
        lines.append("  review and merge:")
        lines.extend(f"    {cmd}" for cmd in review_commands(s))
    else:
        lines.append("  nothing landed on the branch; nothing to merge")
    return lines


def clean(text: str | None) -> str:
    """Drop control characters (terminal escapes in a goal or a model's reason must not reach the screen)."""
    return "".join(ch for ch in (text or "") if ch in "\n\t" or not _is_control(ch))


def _is_control(ch: str) -> bool:
    code = ord(ch)
    return code < 32 or 0x7F <= code < 0xA0


def _one_line(text: str, width: int) -> str:
    return shorten_at_word(clean(text), width)


def summary_text(db_path: Any, session_id: str) -> str:
    """Open the record read-only and render one session's summary (empty if it is not there)."""
    from .store.db import connect

    db = connect(db_path, readonly=True, migrate=False)
    try:
        return "\n".join(render(load_summary(db, session_id)))
    except LookupError:
        return ""
    finally:
        db.conn.close()
