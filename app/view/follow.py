"""Following a session through the store: the state a session screen shows, rebuilt from rows and events.

:class:`SessionModel` lives on the follower thread. It loads the tables once, then digests each batch of events
from ``events_since`` into a :class:`Delta` holding only what changed, as frozen views (:mod:`.views`) the UI
can apply without touching the database. Nothing here imports Textual.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..agents.session import events as ev
from ..agents.status import Control, SessionStatus, TaskKind, TaskStatus
from ..store import queries as q
from .loglines import event_chunk, target_of
from .views import AgentView, CycleView, Delta, StatusView, TaskView, VerdictView, ts


class SessionModel:
    """The digest of one session; owned by one thread."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.seq = 0
        self.status = StatusView()
        self.cycles: dict[str, CycleView] = {}
        self.current_cycle: str | None = None
        self.tasks: dict[str, TaskView] = {}
        self.children: dict[str, list[str]] = {}
        self.agents: dict[str, AgentView] = {}
        self.agent_roles: dict[str, str] = {}
        self.task_agent: dict[str, str] = {}
        self.task_gate: dict[str, tuple[str, int]] = {}
        self.watch: str | None = None

    # -- loading -----------------------------------------------------------------------------------

    def load(self, db: Any) -> Delta:
        """Read the tables in one read transaction, so the events after ``seq`` apply on top exactly."""
        db.conn.execute("BEGIN")
        try:
            return self._load(db)
        finally:
            db.conn.execute("COMMIT")

    def _load(self, db: Any) -> Delta:
        sid = self.session_id
        session = q.get_session(db, sid)
        if session is None:
            raise LookupError(f"session {sid} is not in the record")
        self.seq = q.max_event_seq(db, sid)
        flags = q.session_flags(db, sid)
        gate_refusals, gate_seconds = q.gate_totals(db, sid)
        cycles = q.cycles(db, sid)
        for c in cycles:
            self.cycles[c["id"]] = CycleView(c["id"], int(c["number"]), c["reason"], c["status"])
        self.current_cycle = cycles[-1]["id"] if cycles else None
        for link in q.agent_task_links(db, sid):
            self.agent_roles[link["id"]] = link["role"]
            if link["task_id"]:
                self.task_agent[link["task_id"]] = link["id"]
        self.task_gate = q.task_gates(db, sid)
        for row in sorted(q.tasks(db, sid), key=lambda r: (int(r["depth"]), r["id"])):
            self._put_task(row)
        self._recount_all()
        current = [a for a in q.agents(db, sid) if a["cycle_id"] == self.current_cycle] if cycles else []
        ids = [a["id"] for a in current]
        tokens = q.agent_token_sums(db, ids)
        last = q.agent_last_actions(db, ids)
        for row in current:
            self.agents[row["id"]] = self._agent_view(row, tokens.get(row["id"]), last.get(row["id"]))
        prompt, completion = q.token_totals(db, sid)
        times = [t for t in (ts(x) for x in q.commit_times(db, sid)) if t is not None]
        self.status = replace(
            self.status,
            goal=session["goal"],
            repo=session["repo"],
            session_status=session["status"],
            stop_reason=session["stop_reason"],
            cycle=self.cycles[self.current_cycle].number if self.current_cycle else 0,
            paused=bool(flags.get("paused", session["status"] == "paused")),
            workers=flags.get("workers"),
            sandbox=flags.get("sandbox"),
            check=flags.get("check"),
            gate_refusals=gate_refusals,
            gate_seconds=gate_seconds,
            warning=flags.get("warning"),
            commits=int(session["commits"]),
            prompt_tokens=prompt,
            completion_tokens=completion,
            started_at=ts(session["started_at"]),
            ended_at=ts(session["ended_at"]),
        )
        self._recount_status()
        verdicts = [
            VerdictView(self._cycle_number(v["cycle_id"]), v["decision"], v["reason"], v["notes"] or "")
            for v in q.verdicts(db, sid)
        ]
        return Delta(
            seq=self.seq,
            status=self.status,
            initial=True,
            reset_agents=True,
            cycles=sorted(self.cycles.values(), key=lambda c: c.number),
            tasks=sorted(self.tasks.values(), key=lambda t: (t.depth, t.id)),
            agents=list(self.agents.values()),
            verdicts=verdicts,
            commit_times=times,
        )

    # -- following ---------------------------------------------------------------------------------

    def apply(self, db: Any, rows: list[dict[str, Any]], watch: str | None = None) -> Delta:
        """Digest a batch of ``events`` rows (oldest first) into what changed.

        Log lines are rendered only for ``watch``, the agent whose log is on screen (if None: for every agent).
        """
        self.watch = watch
        delta = Delta(seq=self.seq, status=self.status)
        events = [ev.from_row(row) for row in rows]
        task_ids: set[str] = set()
        agent_ids: set[str] = set()
        for event in events:
            if isinstance(event, ev.TaskCreated | ev.TaskStarted | ev.TaskEnded) and event.task_id:
                task_ids.add(event.task_id)
            elif isinstance(event, ev.GateDecided) and event.task_id:
                _, refused = self.task_gate.get(event.task_id, ("", 0))
                self.task_gate[event.task_id] = (event.verdict, refused + (event.verdict == "refused"))
                task_ids.add(event.task_id)
            aid = event.agent_id
            if aid and (isinstance(event, ev.AgentStarted) or aid not in self.agent_roles):
                agent_ids.add(aid)
        changed_tasks: set[str] = set()
        changed_agents: dict[str, AgentView] = {}
        started = [event for event in events if isinstance(event, ev.CycleStarted)]
        if started:
            self.current_cycle = started[-1].cycle_id
            self.agents.clear()
            delta.reset_agents = True
        if task_ids:
            for row in sorted(q.tasks_by_ids(db, sorted(task_ids)), key=lambda r: (int(r["depth"]), r["id"])):
                self._put_task(row)
                changed_tasks.add(row["id"])
        if agent_ids:
            self._load_agents(db, sorted(agent_ids), changed_agents, changed_tasks)
        status = self.status
        for event in events:
            status = self._apply_event(event, delta, status, changed_agents)
        for tid in list(changed_tasks):
            changed_tasks.update(self._recount_up(tid))
        if delta.reset_agents:
            changed_agents = dict(self.agents)
        self.status = status
        self._recount_status()
        self.seq = events[-1].seq if events else self.seq
        delta.seq = self.seq
        delta.status = self.status
        delta.tasks = sorted(
            (self.tasks[t] for t in changed_tasks if t in self.tasks), key=lambda t: (t.depth, t.id)
        )
        delta.agents = [self.agents[a] for a in changed_agents if a in self.agents]
        return delta

    def _apply_event(
        self,
        event: ev.Event,
        delta: Delta,
        status: StatusView,
        changed_agents: dict[str, AgentView],
    ) -> StatusView:
        aid = event.agent_id
        if aid and (self.watch is None or aid == self.watch):
            chunk = event_chunk(event, self.agent_roles.get(aid))
            if chunk is not None:
                delta.lines.setdefault(aid, []).append(chunk)
        agent = self.agents.get(aid) if aid else None
        match event:
            case ev.AgentStep() if agent is not None:
                target = event.target.split("\n", 1)[0]
                agent = replace(agent, step=event.step or agent.step, last_action=f"{event.action} {target}")
            case ev.AgentEnded() if agent is not None:
                agent = replace(
                    agent,
                    status=event.status or "done",
                    step=event.steps or agent.step,
                    prompt_tokens=max(agent.prompt_tokens, event.prompt_tokens),
                    completion_tokens=max(agent.completion_tokens, event.completion_tokens),
                    ended_at=ts(event.created_at),
                )
            case ev.LlmCall():
                p, c = event.prompt_tokens, event.completion_tokens
                status = replace(
                    status,
                    prompt_tokens=status.prompt_tokens + p,
                    completion_tokens=status.completion_tokens + c,
                    endpoint_calls=_count_call(status.endpoint_calls, event.endpoint),
                )
                if agent is not None:
                    agent = replace(
                        agent,
                        prompt_tokens=agent.prompt_tokens + p,
                        completion_tokens=agent.completion_tokens + c,
                    )
            case ev.CycleStarted():
                cycle = CycleView(event.cycle_id, event.number, event.reason, "running")
                self.cycles[cycle.id] = cycle
                delta.cycles.append(cycle)
                status = replace(status, cycle=cycle.number)
            case ev.CycleEnded() if event.cycle_id in self.cycles:
                cycle = replace(self.cycles[event.cycle_id], status=event.status)
                self.cycles[cycle.id] = cycle
                delta.cycles.append(cycle)
            case ev.CommitLanded():
                status = replace(status, commits=status.commits + 1)
                landed = ts(event.created_at)
                if landed is not None:
                    delta.commit_times.append(landed)
            case ev.VerdictGiven():
                delta.verdicts.append(
                    VerdictView(
                        event.number or self._cycle_number(event.cycle_id),
                        event.decision,
                        event.reason,
                        event.notes,
                    )
                )
            case ev.StatusChanged():
                status = replace(
                    status,
                    paused=status.paused if event.paused is None else event.paused,
                    workers=status.workers if event.workers is None else event.workers,
                    session_status=SessionStatus.PAUSED
                    if event.paused
                    else status.session_status.replace(SessionStatus.PAUSED, SessionStatus.RUNNING),
                )
                if event.message:
                    delta.notices.append(("information", event.message))
            case ev.ControlApplied():
                if event.control in (Control.PAUSE, Control.RESUME):
                    status = replace(status, paused=event.control == Control.PAUSE)
                elif event.control == Control.WORKERS and event.n is not None:
                    status = replace(status, workers=int(event.n))
            case ev.WarningRaised():
                status = replace(status, warning=event.message)
                delta.notices.append(("warning", event.message))
            case ev.SessionStarted():
                status = replace(
                    status,
                    workers=status.workers if event.workers is None else event.workers,
                    sandbox=event.sandbox,
                    check=event.check,
                )
            case ev.GateDecided():
                status = replace(
                    status,
                    gate_refusals=status.gate_refusals + (event.verdict == "refused"),
                    gate_seconds=status.gate_seconds + event.duration_ms / 1000,
                )
            case ev.SessionEnded():
                status = replace(
                    status,
                    session_status=event.status or SessionStatus.DONE,
                    stop_reason=event.reason,
                    ended_at=ts(event.created_at),
                    paused=False,
                )
                delta.notices.append(("information", f"Session {event.status}: {event.reason or ''}".strip()))
        if agent is not None:
            self.agents[agent.id] = agent
            changed_agents[agent.id] = agent
        return status

    # -- helpers -----------------------------------------------------------------------------------

    def _load_agents(
        self, db: Any, ids: list[str], changed: dict[str, AgentView], changed_tasks: set[str]
    ) -> None:
        rows = q.agents_by_ids(db, ids)
        tokens = q.agent_token_sums(db, ids)
        last = q.agent_last_actions(db, ids)
        for row in rows:
            self.agent_roles[row["id"]] = row["role"]
            if row["task_id"]:
                self.task_agent[row["task_id"]] = row["id"]
                if row["task_id"] in self.tasks:
                    self.tasks[row["task_id"]] = replace(self.tasks[row["task_id"]], agent_id=row["id"])
                    changed_tasks.add(row["task_id"])
            if row["cycle_id"] == self.current_cycle or self.current_cycle is None:
                view = self._agent_view(row, tokens.get(row["id"]), last.get(row["id"]))
                self.agents[row["id"]] = view
                changed[row["id"]] = view

    def _agent_view(
        self, row: dict[str, Any], tokens: tuple[int, int] | None, last: dict[str, Any] | None
    ) -> AgentView:
        task = self.tasks.get(row["task_id"] or "")
        p, c = tokens or (0, 0)
        return AgentView(
            id=row["id"],
            role=row["role"],
            name=row["name"],
            task_id=row["task_id"],
            task_title=task.title if task else "",
            status=row["status"],
            step=max(int(row["steps"] or 0), int(last["step"]) if last else 0),
            last_action=f"{last['name']} {target_of(last['arguments']).split(chr(10), 1)[0]}" if last else "",
            prompt_tokens=max(p, int(row["prompt_tokens"] or 0)),
            completion_tokens=max(c, int(row["completion_tokens"] or 0)),
            started_at=ts(row["started_at"]),
            ended_at=ts(row["ended_at"]),
        )

    def _put_task(self, row: dict[str, Any]) -> None:
        tid = row["id"]
        old = self.tasks.get(tid)
        if old is None and row["parent_id"]:
            self.children.setdefault(row["parent_id"], []).append(tid)
        self.tasks[tid] = TaskView(
            id=tid,
            cycle_id=row["cycle_id"],
            parent_id=row["parent_id"],
            kind=row["kind"],
            depth=int(row["depth"]),
            title=row["title"],
            status=row["status"],
            attempts=int(row["attempts"] or 0),
            agent_id=self.task_agent.get(tid),
            done=old.done if old else 0,
            total=old.total if old else 0,
            gate=self.task_gate.get(tid, ("", 0))[0],
            refusals=self.task_gate.get(tid, ("", 0))[1],
        )

    def _recount(self, tid: str) -> bool:
        task = self.tasks[tid]
        done = total = 0
        if task.kind == TaskKind.WORK:
            total, done = 1, int(task.status == TaskStatus.DONE)
        for child in self.children.get(tid, ()):
            c = self.tasks.get(child)
            if c is not None:
                done, total = done + c.done, total + c.total
        if (done, total) == (task.done, task.total):
            return False
        self.tasks[tid] = replace(task, done=done, total=total)
        return True

    def _recount_up(self, tid: str) -> list[str]:
        """Recount ``tid`` and its ancestors; return the ones whose counts changed."""
        touched = []
        node: str | None = tid
        while node is not None and node in self.tasks:
            if self._recount(node):
                touched.append(node)
            node = self.tasks[node].parent_id
        return touched

    def _recount_all(self) -> None:
        for task in sorted(self.tasks.values(), key=lambda t: -t.depth):
            self._recount(task.id)

    def _recount_status(self) -> None:
        counts = {TaskStatus.RUNNING: 0, TaskStatus.PENDING: 0, TaskStatus.DONE: 0, TaskStatus.FAILED: 0}
        for task in self.tasks.values():
            if task.kind == TaskKind.WORK and task.status in counts:
                counts[task.status] += 1
        self.status = replace(self.status, **{str(k): v for k, v in counts.items()})

    def _cycle_number(self, cycle_id: str | None) -> int:
        cycle = self.cycles.get(cycle_id or "")
        return cycle.number if cycle else 0


def _count_call(counts: tuple[tuple[str, int], ...], endpoint: str | None) -> tuple[tuple[str, int], ...]:
    """``counts`` with one more call to ``endpoint``."""
    if not endpoint:
        return counts
    for i, (name, n) in enumerate(counts):
        if name == endpoint:
            return (*counts[:i], (name, n + 1), *counts[i + 1 :])
    return (*counts, (endpoint, 1))
