"""The numbers behind ``formicary report``: one session's record turned into time series and tables.

Plain data (no plotting library here), so it is cheap to test and the charts module only draws. Times are
minutes since the session started; long series are thinned to a few hundred points so a report of a
thousand-worker run stays small.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlite_utils import Database

from .store.queries import last_activity
from .summary import Summary, clean, load_summary

MAX_POINTS = 300
STATUS_SAMPLES = 120
SLOWEST = 15


@dataclass
class TaskTime:
    title: str
    status: str
    minutes: float
    cycle: int


@dataclass
class Verdict:
    minute: float
    cycle: int
    decision: str
    reason: str


@dataclass
class ReportData:
    summary: Summary
    span: float
    """Minutes from the session's start to its end (or to the last row, while it runs)."""
    commits: list[float] = field(default_factory=list)
    """When each commit landed, sorted."""
    completed: dict[str, list[float]] = field(default_factory=dict)
    """Work tasks by final status (done, failed) → when they ended, sorted."""
    status_times: list[float] = field(default_factory=list)
    status_counts: dict[str, list[int]] = field(default_factory=dict)
    """Work tasks by status (pending, running, done, failed) at each of ``status_times``."""
    tokens_by_role: dict[str, tuple[int, int]] = field(default_factory=dict)
    tokens_by_cycle: dict[int, dict[str, int]] = field(default_factory=dict)
    """Cycle number → role → prompt + completion tokens."""
    durations: list[TaskTime] = field(default_factory=list)
    """Finished work tasks, slowest first."""
    landing: dict[int, Counter[str]] = field(default_factory=dict)
    """Cycle number → landing attempts by result (landed, moved, conflict, refused, failed...)."""
    conflicts: int = 0
    verdicts: list[Verdict] = field(default_factory=list)
    cycles: list[dict] = field(default_factory=list)


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    t = datetime.fromisoformat(ts)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def load_report(db: Database, session_id: str, now: datetime | None = None) -> ReportData:
    """Everything the report draws, read with plain queries on a read-only connection."""
    summary = load_summary(db, session_id)
    t0 = _parse(summary.started_at)
    assert t0 is not None

    def minute(ts: str | None) -> float | None:
        t = _parse(ts)
        return None if t is None else max(0.0, (t - t0).total_seconds() / 60)

    end = _parse(summary.ended_at) or _last_row(db, session_id) or now or datetime.now(UTC)
    data = ReportData(summary=summary, span=max((end - t0).total_seconds() / 60, 0.0))
    cycle_number: dict[str, int] = {}
    for c in db.query("SELECT * FROM cycles WHERE session_id = ? ORDER BY number", [session_id]):
        cycle_number[c["id"]] = c["number"]
        data.cycles.append(
            {"number": c["number"], "reason": c["reason"], "status": c["status"],
             "start": minute(c["started_at"]), "end": minute(c["ended_at"])}
        )  # fmt: skip
    data.commits = sorted(
        m
        for r in db.query(
            "SELECT COALESCE(integrated_at, created_at) t FROM commits "
            "WHERE session_id = ? AND status = 'integrated'",
            [session_id],
        )
        if (m := minute(r["t"])) is not None
    )
    _tasks(db, session_id, data, minute, cycle_number)
    _tokens(db, session_id, data, cycle_number)
    _landing(db, session_id, data, cycle_number)
    for v in db.query("SELECT * FROM verdicts WHERE session_id = ? ORDER BY created_at", [session_id]):
        data.verdicts.append(
            Verdict(minute(v["created_at"]) or 0.0, cycle_number.get(v["cycle_id"], 0), clean(v["decision"]),
                    clean(v["reason"]))
        )  # fmt: skip
    data.span = max([data.span, *data.commits[-1:], *(v.minute for v in data.verdicts[-1:])])
    return data


def _last_row(db: Database, session_id: str) -> datetime | None:
    """A session without an end (running, or killed): its timeline ends at its newest row, not at now."""
    return _parse(last_activity(db, session_id))


def _tasks(db: Database, session_id: str, data: ReportData, minute, cycle_number: dict[str, int]) -> None:
    created: list[float] = []
    started: list[float] = []
    ended: dict[str, list[float]] = defaultdict(list)
    for t in db.query(
        "SELECT title, status, cycle_id, created_at, started_at, ended_at FROM tasks "
        "WHERE session_id = ? AND kind = 'work'",
        [session_id],
    ):
        c, s, e = minute(t["created_at"]), minute(t["started_at"]), minute(t["ended_at"])
        if c is not None:
            created.append(c)
        if s is not None:
            started.append(s)
        if e is not None and t["status"] in ("done", "failed", "cancelled"):
            ended[t["status"]].append(e)
            if s is not None:
                data.durations.append(
                    TaskTime(clean(t["title"]), t["status"], e - s, cycle_number.get(t["cycle_id"], 0))
                )
    data.completed = {k: sorted(v) for k, v in ended.items() if k in ("done", "failed")}
    data.durations.sort(key=lambda d: -d.minutes)
    created.sort()
    started.sort()
    for v in ended.values():
        v.sort()
    n = STATUS_SAMPLES
    data.status_times = [data.span * i / n for i in range(n + 1)] if data.span > 0 else [0.0]
    counts: dict[str, list[int]] = {k: [] for k in ("pending", "running", "done", "failed")}
    for x in data.status_times:
        n_created, n_started = bisect_right(created, x), bisect_right(started, x)
        n_ended = {k: bisect_right(v, x) for k, v in ended.items()}
        counts["pending"].append(max(0, n_created - n_started))
        counts["running"].append(max(0, n_started - sum(n_ended.values())))
        counts["done"].append(n_ended.get("done", 0))
        counts["failed"].append(n_ended.get("failed", 0))
    data.status_counts = counts


def _tokens(db: Database, session_id: str, data: ReportData, cycle_number: dict[str, int]) -> None:
    by_cycle: dict[int, dict[str, int]] = defaultdict(dict)
    for r in db.query(
        "SELECT a.cycle_id cycle_id, l.role role, COALESCE(SUM(l.prompt_tokens),0) p, "
        "COALESCE(SUM(l.completion_tokens),0) c FROM llm_calls l LEFT JOIN agents a ON a.id = l.agent_id "
        "WHERE l.session_id = ? GROUP BY a.cycle_id, l.role",
        [session_id],
    ):
        role = clean(r["role"])
        p, c = data.tokens_by_role.get(role, (0, 0))
        data.tokens_by_role[role] = (p + int(r["p"]), c + int(r["c"]))
        number = cycle_number.get(r["cycle_id"], 0)
        by_cycle[number][role] = by_cycle[number].get(role, 0) + int(r["p"]) + int(r["c"])
    data.tokens_by_cycle = dict(sorted(by_cycle.items()))


def _landing(db: Database, session_id: str, data: ReportData, cycle_number: dict[str, int]) -> None:
    if "integrations" not in db.table_names() + db.view_names():  # a view since m009
        return
    landing: dict[int, Counter[str]] = defaultdict(Counter)
    for r in db.query(
        "SELECT t.cycle_id cycle_id, i.result result, COUNT(*) n FROM integrations i "
        "LEFT JOIN tasks t ON t.id = i.task_id WHERE i.session_id = ? GROUP BY t.cycle_id, i.result",
        [session_id],
    ):
        landing[cycle_number.get(r["cycle_id"], 0)][clean(r["result"])] += int(r["n"])
    if "gates" in db.table_names():
        for r in db.query(
            "SELECT t.cycle_id cycle_id, COUNT(*) n FROM gates g LEFT JOIN tasks t ON t.id = g.task_id "
            "WHERE g.session_id = ? AND g.verdict = 'refused' GROUP BY t.cycle_id",
            [session_id],
        ):
            landing[cycle_number.get(r["cycle_id"], 0)]["gate refused"] += int(r["n"])
    data.landing = dict(sorted(landing.items()))
    row = next(
        db.query("SELECT COALESCE(SUM(conflicts),0) n FROM commits WHERE session_id = ?", [session_id])
    )
    data.conflicts = int(row["n"])


def thin(values: list[float], limit: int = MAX_POINTS) -> list[tuple[float, int]]:
    """A cumulative count as (time, count) steps, at most ``limit`` points (the last one always kept)."""
    if not values:
        return []
    step = max(1, len(values) // limit)
    points = [(values[i], i + 1) for i in range(0, len(values), step)]
    if points[-1][1] != len(values):
        points.append((values[-1], len(values)))
    return points
