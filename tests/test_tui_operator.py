"""Pilot tests of the operator's polish: ``r`` resumes, the goal in the title is cut at a word (``g`` shows it
whole), and the bell/notification when the judge decides or the session ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from formicary.store.writer import Writer
from formicary.view.shorten import shorten_at_word
from tests.test_tui import until
from tests.tui_record import GOAL, S1, S2, FakeEngine, Recorder, build_record, make_app


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def record(tmp_path: Path) -> Path:
    db = tmp_path / "formicary.db"
    (tmp_path / "repo").mkdir()
    build_record(db, tmp_path / "repo")
    return db


def test_shorten_at_word() -> None:
    text = "Add a --json flag to the report command"
    assert shorten_at_word(text, 100) == text
    assert shorten_at_word(text, 20) == "Add a --json flag…"
    assert shorten_at_word(text, 18) == "Add a --json flag…"
    assert shorten_at_word(text, 17) == "Add a --json…"
    assert (
        shorten_at_word("one,  two\nthree", 9) == "one, two…"
        or shorten_at_word("one,  two\nthree", 9) == "one…"
    )
    assert shorten_at_word("Supercalifragilistic", 8) == "Superca…"  # no boundary: the only mid-word cut
    for width in range(2, 45):
        short = shorten_at_word(text, width)
        assert len(short) <= width
        assert text.startswith(short.removesuffix("…"))
        kept = short.removesuffix("…").split()
        assert kept == text.split()[: len(kept)] or len(kept) == 1  # whole words only


async def loaded_session(app: Any, pilot: Any) -> Any:
    from formicary.screens.session import SessionScreen

    await until(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.loaded)
    return app.screen


def resuming(db: Path, calls: list[Any]):
    def factory(settings: Any, row: dict[str, Any], db_path: Path) -> Any:
        calls.append((row["id"], row["status"], db_path))
        return FakeEngine(db, row["id"])

    return factory


@pytest.mark.anyio
async def test_r_resumes_a_crashed_session_live_and_not_a_done_one(record: Path) -> None:
    calls: list[Any] = []
    app = make_app(record, resume_factory=resuming(record, calls))
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.screen.query_one("#sessions").row_count == 2)
        await pilot.press("down", "enter")  # S2: done
        screen = await loaded_session(app, pilot)
        assert screen.session_id == S2 and not screen.check_action("resume_session", ())
        await pilot.press("r")
        await pilot.pause(0.3)
        assert calls == [] and app.screen is screen
        await pilot.press("escape", "up", "enter")  # S1: "running" but its process is gone (crashed)
        screen = await loaded_session(app, pilot)
        assert screen.session_id == S1 and screen.mode == "read-only"
        assert screen.check_action("resume_session", ())
        shown = [b for b in screen.active_bindings.values() if b.binding.action == "resume_session"]
        assert shown and shown[0].enabled and shown[0].binding.show  # in the footer as "r resume"
        await pilot.press("r")
        await until(pilot, lambda: S1 in app.engines)
        await until(pilot, lambda: getattr(app.screen, "mode", None) == "live" and app.screen.loaded)
        live = app.screen
        assert calls == [(S1, "running", record)] and live.controls is app.engines[S1][0]
        assert live.can_go_back and not live.check_action("resume_session", ())
        await pilot.press("p")
        assert app.engines[S1][0].calls == [("pause",)]
        await pilot.press("q")
        await until(pilot, lambda: not app.running_engines())


@pytest.mark.anyio
async def test_r_refuses_a_session_running_elsewhere(record: Path) -> None:
    import os

    from formicary.resume import NotResumable, build_resume_engine

    w = Writer(record)
    w.update("sessions", S1, {"pid": os.getpid()})
    w.flush()
    w.close()
    with pytest.raises(NotResumable, match="still running"):
        build_resume_engine(record, S1, resuming(record, []))
    with pytest.raises(NotResumable, match="is done"):
        build_resume_engine(record, S2, resuming(record, []))


@pytest.mark.anyio
@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_title_goal_is_cut_at_a_word_and_g_shows_it_whole(record: Path, size: tuple[int, int]) -> None:
    from textual.widgets import Static

    from formicary.screens.goal import GoalScreen

    app = make_app(record, session_id=S1)
    async with app.run_test(size=size) as pilot:
        screen = await loaded_session(app, pilot)
        title = screen.sub_title
        if size[0] == 80:
            assert title.endswith("…") and len(title) <= 80 - 32
            assert GOAL.startswith(title.removesuffix("…"))
            assert GOAL[len(title.removesuffix("…"))] == " "  # cut between two words
        else:
            assert title == GOAL
        await pilot.press("g")
        await until(pilot, lambda: isinstance(app.screen, GoalScreen))
        assert str(app.screen.query_one("#goal-text", Static).render()).strip() == GOAL
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["bell", "off"])
async def test_the_judge_and_the_end_ring_when_asked(record: Path, mode: str) -> None:
    app = make_app(record, session_id=S1, notify=mode)
    bells: list[int] = []
    app.bell = lambda: bells.append(1)  # type: ignore[method-assign]
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await loaded_session(app, pilot)
        w = Writer(record)
        r = Recorder(w, S1)
        r.n = 2000
        r.event(531, "verdict", agent="AG05", cycle_id="C2" + "0" * 24, number=2, decision="done",
                reason="All tests pass.\x1b]0;owned\x07")  # fmt: skip
        w.flush()
        await until(
            pilot, lambda: screen.status.commits >= 0 and len(screen.query_one("#verdicts").lines) > 2
        )
        r.event(532, "session_ended", status="done", reason="the judge is satisfied")
        w.flush()
        w.close()
        await until(pilot, lambda: screen.status.ended)
        await pilot.pause(0.2)
    if mode == "off":
        assert bells == [] and app.alerts == []
    else:
        assert len(bells) == 2
        assert app.alerts[0][0] == "formicary: the judge decided" and "cycle 2: done" in app.alerts[0][1]
        assert app.alerts[1] == ("formicary: the session ended", "done: the judge is satisfied")


def test_desktop_alert_cleans_the_text(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from formicary import alerts

    sent: list[list[str]] = []
    written: list[str] = []

    class Driver:
        def write(self, data: str) -> None:
            written.append(data)

    class App:
        _driver = Driver()
        rang = 0

        def bell(self) -> None:
            self.rang += 1

    monkeypatch.setattr(alerts.shutil, "which", lambda name: "/bin/true")
    monkeypatch.setattr(alerts.subprocess, "Popen", lambda args, **kw: sent.append(args))
    app = App()
    assert alerts.alert(app, "desktop", "formicary", "done\x1b]0;x\x07; rm -rf /")
    assert app.rang == 1
    assert written == ["\x1b]9;formicary: done]0,x, rm -rf /\x07"]
    assert sent == [["/bin/true", "--app-name=formicary", "--", "formicary", "done]0,x, rm -rf /"]]
    assert not alerts.alert(app, "off", "a", "b") and app.rang == 1
