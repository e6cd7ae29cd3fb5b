"""Layout snapshots of the sessions browser and the session screen, on the fixed fixture record.

Layout only: behaviour is tested with Pilot in ``test_tui.py``. The clock is frozen and the record (built in
``tui_record.py``) has fixed ids and timestamps, so the screens are the same on every run. Update with
``pytest --snapshot-update``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.tui_record import S1, FakeEngine, build_record, make_app


@pytest.fixture
def record(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    # a fixed folder name: the repository's name shows in the browser
    base = tmp_path_factory.mktemp("snap")
    monkeypatch.setenv("FORMICARY_HOME", str(base / "home"))
    db = base / "formicary.db"
    build_record(db, base / "demo-repo")
    return db


async def settled(pilot: Any) -> None:
    """Wait until the follower and the log loader have filled the panes."""
    from formicary.screens.browser import BrowserScreen
    from formicary.screens.session import SessionScreen
    from formicary.widgets.sessions_table import SessionsTable

    app = pilot.app
    for _ in range(200):
        screen = app.screen
        if isinstance(screen, SessionScreen) and screen.loaded and screen.log_ready:
            break
        if isinstance(screen, BrowserScreen) and screen.query_one(SessionsTable).row_count:
            break
        await pilot.pause(0.02)
    await pilot.pause()


def test_browser_layout(record: Path, snap_compare: Any) -> None:
    assert snap_compare(make_app(record), terminal_size=(160, 48), run_before=settled)


def test_session_layout(record: Path, snap_compare: Any) -> None:
    app = make_app(record, engine=FakeEngine(record, S1))
    assert snap_compare(app, terminal_size=(160, 48), run_before=settled)


def test_session_layout_small_terminal(record: Path, snap_compare: Any) -> None:
    app = make_app(record, engine=FakeEngine(record, S1))
    assert snap_compare(app, terminal_size=(80, 24), run_before=settled)
