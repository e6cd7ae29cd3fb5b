"""``formicary report``: one self-contained HTML file whose charts a real browser draws.

The page is opened in headless Chromium (the Debian package); each chart's SVG is painted into a canvas and its
non-white pixels counted, and the full page is screenshotted into the test's tmp folder.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from formicary.store.writer import Writer
from tests.browser import Browser
from tests.tui_record import S1, Recorder, at, build_record

HOSTILE = '<script>alert("x")</script><img src="http://example.invalid/x.png">'
CHARTS = 7

PAINTED = """
(async () => {
  const out = [];
  for (const svg of document.querySelectorAll('svg.pygal-chart')) {
    const box = svg.getBoundingClientRect();
    const shapes = [...svg.querySelectorAll('.plot .series path, .plot .series rect, .plot .series circle')]
      .filter(e => { const b = e.getBBox(); return b.width > 0 || b.height > 0; }).length;
    const img = new Image();
    img.src = 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(new XMLSerializer().serializeToString(svg));
    await img.decode();
    const canvas = document.createElement('canvas');
    canvas.width = 900; canvas.height = 340;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(img, 0, 0, 900, 340);
    const px = ctx.getImageData(0, 0, 900, 340).data;
    let coloured = 0;
    for (let i = 0; i < px.length; i += 4) {
      const [r, g, b, a] = [px[i], px[i + 1], px[i + 2], px[i + 3]];
      if (a > 0 && Math.max(r, g, b) - Math.min(r, g, b) > 60) coloured++;  // chart colours, not grey text
    }
    out.push({title: svg.querySelector('.title')?.textContent || '', width: box.width, shapes, coloured});
  }
  return out;
})()
"""


@pytest.fixture
def record(tmp_path: Path) -> Path:
    """The TUI tests' fixed session, plus landing attempts (a conflict, a refusal) and a hostile title."""
    db = tmp_path / "formicary.db"
    build_record(db, tmp_path / "repo")
    w = Writer(db)
    r = Recorder(w, S1)
    r.task(500, "T99", "C2" + "0" * 24, "T07", "work", HOSTILE, "failed", depth=1, ended_at=at(590),
           started_at=at(505), error="no")  # fmt: skip
    for i, (task, result) in enumerate(
        [("T04", "landed"), ("T05", "conflict"), ("T05", "landed"), ("T12", "moved"), ("T12", "refused"),
         ("T12", "landed")]
    ):  # fmt: skip
        w.insert("integrations", {"id": f"I{i}", "session_id": S1, "task_id": task, "attempt": i,
                                  "result": result, "created_at": at(60 + i)})  # fmt: skip
    for tid, start, end in (("T04", 30, 55), ("T05", 31, 118), ("T06", 32, 300), ("T12", 422, 478)):
        w.update("tasks", tid, {"started_at": at(start), "ended_at": at(end)})
    w.flush()
    w.close()
    return db


class Tags(HTMLParser):
    """Every real tag and attribute of a page (escaped text is not a tag), and its style sheets."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names.append(tag)
        self.attrs.extend((k, v or "") for k, v in attrs)
        self._in_style = tag == "style"

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)
            self._in_style = False


def report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "formicary", "report", *args], capture_output=True, text=True, timeout=120
    )


def test_report_is_one_offline_file_whose_charts_chromium_draws(record: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    done = report(S1[-6:], "--db", str(record), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out} (")
    tags = Tags()
    tags.feed(out.read_text())
    assert "script" not in tags.names and "img" not in tags.names  # the hostile title is only text
    assert tags.names.count("svg") == CHARTS
    fetched = [v for k, v in tags.attrs if k in ("src", "href", "xlink:href") and not v.startswith("#")]
    assert not fetched, fetched
    assert not any(re.search(r"url\(|@import", css) for css in tags.styles)

    async def look() -> tuple[list[dict], dict]:
        async with Browser(tmp_path) as b:
            await b.goto(out.as_uri())
            charts = await b.evaluate(PAINTED)
            page_facts = await b.evaluate(
                "({scripts: document.scripts.length, images: document.images.length,"
                " resources: performance.getEntriesByType('resource').length,"
                " tables: document.querySelectorAll('table').length,"
                " text: document.body.innerText})"
            )
            await b.screenshot(tmp_path / "report.png", full_page=True)
            return charts, page_facts

    charts, facts = asyncio.run(look())
    assert (tmp_path / "report.png").stat().st_size > 50_000
    assert facts["scripts"] == 0 and facts["images"] == 0 and facts["resources"] == 0
    assert facts["tables"] >= 7
    assert HOSTILE in facts["text"]  # shown as text in the slowest-tasks table
    titles = [c["title"] for c in charts]
    assert len(charts) == CHARTS, titles
    for chart in charts:
        assert chart["width"] > 300, chart
        assert chart["shapes"] > 0, chart
        assert chart["coloured"] > 500, chart  # something was painted in the chart colours
    assert "Landing attempts per cycle: conflicts and gate refusals" in titles
    assert "refused 1" in facts["text"] and "conflict 1" in facts["text"]
    assert "task\tcycle\tstatus\tminutes" in facts["text"]  # tasks of minutes are measured in minutes
    assert "judge: continue" in facts["text"] or "continue" in facts["text"]


def test_report_of_an_empty_session_still_renders(tmp_path: Path) -> None:
    db = tmp_path / "formicary.db"
    w = Writer(db)
    w.insert("sessions", {"id": "01EMPTY", "goal": "nothing yet", "repo": "/r", "branch": "formicary/e",
                          "status": "running", "started_at": at(0)})  # fmt: skip
    w.flush()
    w.close()
    out = tmp_path / "empty.html"
    done = report("01EMPTY", "--db", str(db), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_text().count('class="pygal-chart"') == CHARTS


def test_report_bad_input_is_one_line_and_writes_nothing(record: Path, tmp_path: Path) -> None:
    missing = report("ZZZZ", "--db", str(record), "-o", str(tmp_path / "x.html"))
    assert missing.returncode == 2 and missing.stderr.strip() == "formicary: no session matches 'ZZZZ'"
    nofolder = report(S1, "--db", str(record), "-o", str(tmp_path / "no" / "such" / "x.html"))
    assert nofolder.returncode == 2 and len(nofolder.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.html").exists() and not (tmp_path / "no").exists()
    assert not list(tmp_path.glob(".formicary-report-*"))


def test_short_tasks_are_measured_in_seconds(tmp_path: Path) -> None:
    from formicary.report_data import load_report
    from formicary.report_html import render_report
    from formicary.store.db import connect

    db = tmp_path / "formicary.db"
    w = Writer(db)
    w.insert("sessions", {"id": "01SHORT", "goal": "g", "repo": "/r", "branch": "b", "status": "done",
                          "started_at": at(0), "ended_at": at(100)})  # fmt: skip
    w.insert("cycles", {"id": "C", "session_id": "01SHORT", "number": 1, "reason": "start", "status": "done",
                        "started_at": at(0)})  # fmt: skip
    for i, seconds in enumerate((12, 40, 75)):
        w.insert("tasks", {"id": f"T{i}", "session_id": "01SHORT", "cycle_id": "C", "kind": "work",
                           "title": f"t{i}", "status": "done", "created_at": at(0), "started_at": at(1),
                           "ended_at": at(1 + seconds)})  # fmt: skip
    w.flush()
    w.close()
    page = render_report(load_report(connect(db, readonly=True, migrate=False), "01SHORT"))
    assert "<th>seconds</th>" in page and "<td>75.00</td>" in page
