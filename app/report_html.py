"""``formicary report``: one self-contained HTML file of charts and the tables behind them.

Charts are drawn by pygal as inline SVG: no script, no network, nothing to install to open the file (a
browser, a mail attachment, a CI artifact). pygal was chosen over matplotlib (about 125 MB installed with
numpy and ~1.5 s to import here, against pygal's 1.3 MB and under 0.2 s) and over the JavaScript libraries
(plotly, bokeh, vega), whose offline pages carry a megabyte or more of script. It is imported only by this
module, which only ``formicary report`` loads.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import pygal
from pygal.style import Style

from .report_data import SLOWEST, ReportData, thin
from .summary import duration_text, render

STYLE = Style(
    background="white",
    plot_background="white",
    foreground="#333",
    foreground_strong="#111",
    foreground_subtle="#999",
    colors=("#1f77b4", "#2ca02c", "#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"),
    font_family="sans-serif",
    title_font_size=15,
    legend_font_size=12,
    label_font_size=11,
    major_label_font_size=11,
)
STATUS_COLORS = {"pending": "#7f7f7f", "running": "#1f77b4", "done": "#2ca02c", "failed": "#d62728"}
RESULT_COLORS = {"landed": "#2ca02c", "moved": "#9e9e9e", "conflict": "#ff7f0e", "refused": "#d62728", "gate refused": "#d62728",
                 "failed": "#8c1c13"}  # fmt: skip
OTHER_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def _styled(colors: Sequence[str]) -> Style:
    return Style(**{**STYLE.to_dict(), "colors": tuple(colors) or STYLE.colors})


COMMON = {
    "js": [],  # no tooltip script from the network: the page must open offline
    "disable_xml_declaration": True,
    "style": STYLE,
    "width": 900,
    "height": 340,
    "legend_at_bottom": True,
    "truncate_legend": 40,
    "print_values": False,
}


def _unit(span_minutes: float) -> tuple[float, str]:
    return (60.0, "hours") if span_minutes > 180 else (1.0, "minutes")


def _duration_unit(d: ReportData) -> tuple[float, str]:
    """Seconds for short tasks, hours for very long ones: the scale that gives readable numbers."""
    top = max((t.minutes for t in d.durations), default=0.0)
    return (1 / 60, "seconds") if top < 2 else _unit(top)


SCRIPT = re.compile(r"<script\b.*?</script>", re.S)


def _svg(chart: pygal.graph.graph.Graph) -> str:
    """The chart's SVG without pygal's config script (the tooltips it feeds are not loaded: no script at all)."""
    svg = SCRIPT.sub("", chart.render(is_unicode=True))
    if "<script" in svg:
        raise ValueError("a script survived in a chart")
    return svg


def chart_progress(d: ReportData) -> str:
    """Commits landed and tasks completed over time, with the judge's verdicts on the same timeline."""
    div, unit = _unit(d.span)
    chart = pygal.XY(
        title="Commits and task completions over time",
        x_title=f"{unit} since the start",
        y_title="count",
        dots_size=2,
        show_dots=False,
        **COMMON,
    )
    chart.add("commits landed", [(x / div, n) for x, n in _steps(d.commits)])
    chart.add("tasks done", [(x / div, n) for x, n in _steps(d.completed.get("done", []))])
    chart.add("tasks failed", [(x / div, n) for x, n in _steps(d.completed.get("failed", []))])
    for decision in sorted({v.decision for v in d.verdicts}):
        points = [
            (v.minute / div, _count_before(d.commits, v.minute)) for v in d.verdicts if v.decision == decision
        ]
        chart.add(f"judge: {decision}", points, stroke=False, show_dots=True, dots_size=7)
    return _svg(chart)


def _steps(values: list[float]) -> list[tuple[float, int]]:
    """A cumulative count drawn as a staircase that starts at zero."""
    points = thin(values)
    if not points:
        return []
    out: list[tuple[float, int]] = [(0.0, 0)]
    prev = 0
    for x, n in points:
        out.extend([(x, prev), (x, n)])
        prev = n
    return out


def _count_before(values: list[float], x: float) -> int:
    from bisect import bisect_right

    return bisect_right(values, x)


def chart_status(d: ReportData) -> str:
    div, unit = _unit(d.span)
    style = _styled(list(STATUS_COLORS.values()))
    chart = pygal.StackedLine(
        title="Work tasks by status over time",
        x_title=f"{unit} since the start",
        y_title="tasks",
        fill=True,
        show_dots=False,
        x_labels_major_every=max(1, len(d.status_times) // 8),
        show_minor_x_labels=False,
        **{**COMMON, "style": style},
    )
    chart.x_labels = [f"{t / div:.1f}" for t in d.status_times]
    for status in STATUS_COLORS:
        chart.add(status, d.status_counts.get(status, []))
    return _svg(chart)


def chart_tokens_by_role(d: ReportData) -> str:
    chart = pygal.StackedBar(title="Tokens per role", y_title="tokens", **COMMON)
    roles = list(d.tokens_by_role)
    chart.x_labels = roles
    chart.add("prompt", [d.tokens_by_role[r][0] for r in roles])
    chart.add("completion", [d.tokens_by_role[r][1] for r in roles])
    return _svg(chart)


def chart_tokens_by_cycle(d: ReportData) -> str:
    chart = pygal.StackedBar(title="Tokens per cycle", x_title="cycle", y_title="tokens", **COMMON)
    cycles = list(d.tokens_by_cycle)
    chart.x_labels = [str(c) if c else "-" for c in cycles]
    for role in sorted({r for roles in d.tokens_by_cycle.values() for r in roles}):
        chart.add(role, [d.tokens_by_cycle[c].get(role, 0) for c in cycles])
    return _svg(chart)


def chart_duration_histogram(d: ReportData) -> str:
    statuses = [s for s in ("done", "failed") if any(t.status == s for t in d.durations)]
    div, unit = _duration_unit(d)
    chart = pygal.Histogram(
        title="Task durations", x_title=unit, y_title="tasks",
        **{**COMMON, "style": _styled([STATUS_COLORS[s] for s in statuses])},
    )  # fmt: skip
    top = max((t.minutes / div for t in d.durations), default=1.0)
    for status in statuses:
        chart.add(status, _bins([t.minutes / div for t in d.durations if t.status == status], top))
    return _svg(chart)


def _bins(values: Sequence[float], top: float, n: int = 20) -> list[tuple[int, float, float]]:
    width = max(top, 1e-6) / n
    counts = [0] * n
    for v in values:
        counts[min(n - 1, int(v / width))] += 1
    return [(c, i * width, (i + 1) * width) for i, c in enumerate(counts) if c]


def chart_slowest(d: ReportData) -> str:
    slow = d.durations[:SLOWEST]
    chart = pygal.HorizontalBar(
        title=f"The {len(slow)} slowest tasks", x_title=_duration_unit(d)[1], show_legend=False,
        **{**COMMON, "height": max(240, 28 * len(slow) + 120), "truncate_label": 60},
    )  # fmt: skip
    chart.x_labels = [_short(t.title, 60) for t in reversed(slow)]
    div, unit = _duration_unit(d)
    chart.add(unit, [round(t.minutes / div, 2) for t in reversed(slow)])
    return _svg(chart)


def chart_landing(d: ReportData) -> str:
    results = sorted({r for counts in d.landing.values() for r in counts})
    others = iter(OTHER_COLORS * (len(results) // len(OTHER_COLORS) + 1))
    chart = pygal.StackedBar(
        title="Landing attempts per cycle: conflicts and gate refusals", x_title="cycle", y_title="attempts",
        **{**COMMON, "style": _styled([RESULT_COLORS.get(r) or next(others) for r in results])},
    )  # fmt: skip
    cycles = list(d.landing)
    chart.x_labels = [str(c) if c else "-" for c in cycles]
    for result in results:
        chart.add(result, [d.landing[c].get(result, 0) for c in cycles])
    return _svg(chart)


def _short(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 960px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; }
figure { margin: 0; } figure svg { width: 100%; height: auto; }
table { border-collapse: collapse; font-size: .85em; margin: .6em 0; }
td, th { border: 1px solid #ddd; padding: .2em .6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
"""


def render_report(d: ReportData, generated: datetime | None = None) -> str:
    """The whole page as one string: summary, charts (inline SVG) and their tables."""
    s = d.summary
    generated = generated or datetime.now(UTC)
    sections = [
        ("Progress", chart_progress(d), _table(
            ["cycle", "reason", "status", "started (min)", "ended (min)"],
            [(c["number"], c["reason"], c["status"], _m(c["start"]), _m(c["end"])) for c in d.cycles],
        )),
        ("Tasks by status", chart_status(d), _table(
            ["status", "at the end"], [(k, v[-1] if v else 0) for k, v in d.status_counts.items()]
        )),
        ("Tokens", chart_tokens_by_role(d) + chart_tokens_by_cycle(d), _table(
            ["role", "prompt", "completion", "total"],
            [(r, f"{p:,}", f"{c:,}", f"{p + c:,}") for r, (p, c) in d.tokens_by_role.items()],
        ) + _table(
            ["cycle", *sorted({r for v in d.tokens_by_cycle.values() for r in v})],
            [(c, *(f"{v.get(r, 0):,}" for r in sorted({r for v in d.tokens_by_cycle.values() for r in v})))
             for c, v in d.tokens_by_cycle.items()],
        )),
        ("Task durations", chart_duration_histogram(d) + chart_slowest(d), _table(
            ["task", "cycle", "status", _duration_unit(d)[1]],
            [(t.title, t.cycle, t.status, f"{t.minutes / _duration_unit(d)[0]:.2f}") for t in d.durations[:SLOWEST]],
        )),
        ("Conflicts and gate refusals", chart_landing(d), _table(
            ["cycle", "attempts by result"],
            [(c, ", ".join(f"{k} {n}" for k, n in sorted(v.items()))) for c, v in d.landing.items()],
        ) + f"<p>Conflicts handed back to workers: {d.conflicts}</p>"),
        ("The judge's verdicts", "", _table(
            ["minute", "cycle", "decision", "reason"],
            [(f"{v.minute:.1f}", v.cycle, v.decision, v.reason) for v in d.verdicts],
        )),
    ]  # fmt: skip
    body = "\n".join(
        f'<section><h2>{html.escape(title)}</h2><figure class="chart">{svg}</figure>{table}</section>'
        for title, svg, table in sections
    )
    summary = html.escape("\n".join(render(s, now=generated)))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>formicary session {html.escape(s.session_id)}</title><style>{CSS}</style></head><body>"
        f"<h1>formicary session {html.escape(s.session_id)}</h1>"
        f"<p>Generated {generated.isoformat(timespec='seconds')} · wall time "
        f"{duration_text(s.wall_seconds(generated))}</p><pre>{summary}</pre>{body}</body></html>\n"
    )


def _m(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
