"""The one-line summary under the panes: cycle, task counts, commits, tokens, elapsed, warnings, throughput."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, Sparkline, Static

from ..view import formatting as fmt

if TYPE_CHECKING:
    from ..view.views import StatusView

BINS = 30
"""Columns of the throughput sparkline."""


def commit_bins(
    times: list[float], start: float | None, end: float, bins: int = BINS
) -> tuple[list[float], int]:
    """Commits per interval across the session so far, and the interval's length in seconds (≥ 10 s)."""
    if start is None:
        return [0.0] * bins, 10
    width = max(10, int((end - start) / bins) + 1)
    first = end - width * bins
    counts = [0.0] * bins
    for t in times:
        i = int((t - first) // width)
        if 0 <= i < bins:
            counts[i] += 1
    return counts, width


def _server(url: str) -> str:
    """``host:port`` of an endpoint URL, short enough for the bar."""
    return url.split("://", 1)[-1].split("/", 1)[0]


def _badges(s: StatusView) -> list[tuple[str, str]]:
    """Warnings that must not be missed, in reverse video at the start of the line."""
    badges = []
    if s.ended:
        badges.append((f" {s.session_status.upper()} ", "bold black on grey70"))
    elif s.paused:
        badges.append((" PAUSED ", "bold black on yellow"))
    if s.sandbox and s.sandbox.startswith("disabled"):
        badges.append((" UNSANDBOXED ", "bold white on red"))
    elif s.sandbox == "unavailable":
        badges.append((" NO SANDBOX: commands refused ", "bold black on dark_orange"))
    return badges


def status_text(s: StatusView, now: float, mode: str, compact: bool) -> Text:
    """The summary; ``compact`` drops the words for narrow terminals."""
    text = Text()
    for badge, style in _badges(s):
        text.append(badge, style=style)
        text.append(" ")
    sep = " " if compact else "  "
    text.append("c" if compact else "cycle ")
    text.append(str(s.cycle), style="bold")
    counts = (("running", s.running, "working"), ("pending", s.pending, "pending"), ("done", s.done, "done"),
              ("failed", s.failed, "failed"))  # fmt: skip
    for status, n, word in counts:
        style = fmt.style(status) if n or status != "failed" else "grey62"
        text.append(sep)
        text.append(f"{fmt.icon(status)} {n}" + ("" if compact else f" {word}"), style=style)
    text.append(sep)
    text.append(f"⎇ {s.commits}" + ("" if compact else " commits"), style="bold cyan")
    text.append(f"{sep}{fmt.tokens(s.prompt_tokens)}↑ {fmt.tokens(s.completion_tokens)}↓")
    end = s.ended_at if s.ended_at is not None else now
    text.append(sep + fmt.duration(end - s.started_at if s.started_at is not None else None))
    if not compact:
        if s.workers is not None:
            text.append(f"  {s.workers} workers", style="grey70")
        if s.check is not None:
            refused = f", {s.gate_refusals} refused" if s.gate_refusals else ""
            text.append(f"  gate: {fmt.clip(s.check, 40)}{refused}, {s.gate_seconds:.0f}s", style="grey70")
        if s.ended and s.session_status == "failed" and s.stop_reason:
            text.append(f"  ✗ {fmt.clip(s.stop_reason, 120)}", style="bold red")
        elif s.warning:
            text.append(f"  ! {fmt.clip(s.warning, 60)}", style="bold yellow")
        if len(s.endpoint_calls) > 1:  # a pool: how the calls spread over its servers
            spread = " · ".join(f"{_server(url)} {n}" for url, n in s.endpoint_calls)
            text.append(f"  calls {spread}", style="grey70")
        if mode == "read-only":
            text.append("  read-only", style="grey62")
    return text


class StatusBar(Horizontal):
    """Holds the summary text and a sparkline of commits landed per interval."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._text: Text | None = None
        self._label = ""

    def compose(self) -> ComposeResult:
        yield Static(id="status-text")
        yield Label("commits", id="spark-label")
        yield Sparkline([0.0] * BINS, summary_function=max, id="throughput")

    def show(self, status: StatusView, now: float, times: list[float], mode: str = "live") -> None:
        """Redraw in place: the bar never changes size, so no layout pass (which would repaint every pane)."""
        width = self.size.width - 28
        text = status_text(status, now, mode, compact=False)
        if width > 0 and text.cell_len > width:
            text = status_text(status, now, mode, compact=True)
        if text != self._text:
            self._text = text
            self.query_one("#status-text", Static).update(text, layout=False)
        end = status.ended_at if status.ended_at is not None else now
        bins, interval = commit_bins(times, status.started_at, end)
        spark = self.query_one("#throughput", Sparkline)
        if spark.data != bins:
            spark.data = bins
        label = f"⎇/{fmt.duration(interval)}"
        if label != self._label:
            self._label = label
            self.query_one("#spark-label", Label).update(label)
