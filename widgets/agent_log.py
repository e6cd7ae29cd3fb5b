"""The log of one agent: its actions and observations, written in batches and bounded in length.

A small line-API widget: plain lines in a bounded deque, each rendered only when it scrolls into view, so a
batch of new lines costs the strings and one repaint. (``Log`` measures widths in a worker thread and repaints
once more when it reports; with many updates a second that extra frame shows in the latency.)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..store.sanitize import safe_text
from .lines import set_content_size

MAX_LINES = 2000
_PREFIX_STYLES = tuple(
    (prefix, Style.parse(style))
    for prefix, style in (
        ("    !", "bold red"),
        ("✘", "bold red"),
        ("✔", "green"),
        ("──", "bold"),
        ("plan:", "bold cyan"),
    )
)


class AgentLog(ScrollView, can_focus=True):
    """Keeps the newest ``max_lines`` lines; follows the end while the view is at the end."""

    COMPONENT_CLASSES: ClassVar[set[str]] = set()

    def __init__(self, *, id: str | None = None, max_lines: int = MAX_LINES) -> None:
        super().__init__(id=id)
        self._lines: deque[str] = deque(maxlen=max_lines)
        self._width = 0
        self.agent_id: str | None = None
        """Whose lines these are."""
        self._base = Style()

    def on_mount(self) -> None:
        self.anchor()

    @property
    def lines(self) -> list[str]:
        return list(self._lines)

    @property
    def line_count(self) -> int:
        return len(self._lines)

    def show(self, agent_id: str | None, lines: list[str]) -> None:
        """Replace the content with another agent's lines (one repaint)."""
        self.agent_id = agent_id
        self._lines.clear()
        self._width = 0
        self._add(lines)
        self.scroll_end(
            animate=False, immediate=True, x_axis=False
        )  # in this repaint, and stay anchored there
        self.refresh()

    def append(self, lines: Iterable[str]) -> None:
        """Add lines; a view at the end (the default, until the operator scrolls up) follows them."""
        following = self.scroll_offset.y >= self.max_scroll_y
        self._add(lines)
        if following:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()

    def write_line(self, line: str) -> None:
        self.append([line])

    def clear(self) -> None:
        self.show(self.agent_id, [])

    def _add(self, lines: Iterable[str]) -> None:
        for line in lines:
            for part in safe_text(line).expandtabs(4).splitlines() or [""]:
                self._lines.append(part)
                self._width = max(self._width, cell_len(part))
        set_content_size(self, Size(self._width, len(self._lines)))

    def render_lines(self, crop: Region) -> list[Strip]:
        self._base = self.rich_style  # computed once per repaint, not once per line
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self._base
        index = self.scroll_offset.y + y
        if index >= len(self._lines):
            return Strip.blank(width, base)
        text = self._lines[index]
        style = base
        for prefix, extra in _PREFIX_STYLES:
            if text.startswith(prefix):
                style = base + extra
                break
        strip = Strip([Segment(text, style)], cell_len(text))
        return strip.crop_extend(self.scroll_offset.x, self.scroll_offset.x + width, base)
