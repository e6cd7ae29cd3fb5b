"""The agents of the current cycle, one row each: task, step, last action, tokens, elapsed.

A line-API widget rather than a ``DataTable``: hundreds of rows change several times a second, and a
``DataTable`` re-renders every visible row whenever any cell or the cursor changes. Here rows are rendered
only when in view, and each keeps its strip until its agent, the width or the cursor changes, so a cursor move
repaints two lines and an update out of view costs a dict assignment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..view import formatting as fmt
from .lines import set_content_size

if TYPE_CHECKING:
    from ..view.views import AgentView

WIDE = (("agent", 19), ("task", 0), ("step", 4), ("last action", 0), ("tokens", 11), ("time", 6))
NARROW = (("agent", 15), ("step", 4), ("last action", 0))
"""Columns and widths; 0 shares what is left. Below ``NARROW_BELOW`` cells only the essentials fit."""
NARROW_BELOW = 72
Cells = tuple[Text, ...]


def layout(width: int) -> tuple[tuple[str, int], ...]:
    """Column widths that fill ``width`` cells (each column also takes 2 cells of padding)."""
    columns = NARROW if width < NARROW_BELOW else WIDE
    fixed = sum(w + 2 for _, w in columns if w) + sum(2 for _, w in columns if not w)
    flexible = [name for name, w in columns if not w]
    free = max(10 * len(flexible), width - fixed)
    shares = {"task": 4, "last action": 5} if len(flexible) == 2 else {flexible[0]: 1}
    total = sum(shares.values())
    out, left = [], free
    for name, w in columns:
        if not w:
            w = left if name == flexible[-1] else free * shares[name] // total
            left -= w
        out.append((name, max(4, w)))
    return tuple(out)


class WorkersTable(ScrollView, can_focus=True):
    """Rows keyed by agent id, a fixed header line, a row cursor that posts what it lands on."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "up", show=False),
        Binding("down", "cursor(1)", "down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("home", "jump(0)", "first", show=False),
        Binding("end", "jump(-1)", "last", show=False),
        Binding("enter", "select", "open task", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"workers-table--header", "workers-table--cursor"}

    class Highlighted(Message):
        """The cursor is on another agent."""

        def __init__(self, table: WorkersTable, agent_id: str) -> None:
            super().__init__()
            self.table, self.agent_id = table, agent_id

    class Selected(Message):
        """Enter (or a double click) on an agent's row."""

        def __init__(self, table: WorkersTable, agent_id: str) -> None:
            super().__init__()
            self.table, self.agent_id = table, agent_id

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._order: list[str] = []
        self._index: dict[str, int] = {}
        self._agents: dict[str, AgentView] = {}
        self._strips: dict[str, tuple[tuple[object, ...], Strip]] = {}
        self._header: tuple[tuple[object, ...], Strip] | None = None
        self._columns = layout(100)
        self._now = 0.0
        self._base = Style()
        self.cursor_row = 0

    # -- data --------------------------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self._order)

    @property
    def agents(self) -> dict[str, AgentView]:
        return self._agents

    @property
    def selected_agent(self) -> str | None:
        """The agent under the cursor, if any."""
        return self._order[self.cursor_row] if self._order else None

    def agent(self, agent_id: str) -> AgentView | None:
        return self._agents.get(agent_id)

    def row_key(self, row: int) -> str:
        return self._order[row]

    def get_row_index(self, agent_id: str) -> int:
        return self._index[agent_id]

    def reset(self) -> None:
        """A new cycle: its agents replace the old ones."""
        self._order.clear()
        self._index.clear()
        self._agents.clear()
        self._strips.clear()
        self.cursor_row = 0
        self._resize()
        self.refresh()

    def upsert(self, agents: list[AgentView], now: float) -> None:
        """Store every agent; repaint the lines of those in view (the rest are drawn when scrolled to)."""
        self._now = now
        first = not self._order
        added = False
        top = self.scroll_offset.y
        bottom = top + self.size.height
        for agent in agents:
            row = self._index.get(agent.id)
            if row is None:
                row = self._index[agent.id] = len(self._order)
                self._order.append(agent.id)
                added = True
            self._agents[agent.id] = agent
            if top <= row < bottom:
                self.refresh_line(row + 1)
        if added:
            self._resize()
        if first and self._order:
            self.post_message(self.Highlighted(self, self._order[0]))

    def tick(self, now: float) -> None:
        """Advance the elapsed time of the running agents in view."""
        self._now = now
        top = self.scroll_offset.y
        for row, agent_id in enumerate(self._order[top : top + self.size.height], top):
            if self._agents[agent_id].ended_at is None:
                self.refresh_line(row + 1)

    def _resize(self) -> None:
        set_content_size(self, Size(self.size.width, len(self._order) + 1))

    # -- cursor ------------------------------------------------------------------------------------

    def move_cursor(self, row: int) -> None:
        """Put the cursor on ``row`` (clamped), scroll it into view and say which agent it is on."""
        if not self._order:
            return
        row = max(0, min(row, len(self._order) - 1))
        if row != self.cursor_row:
            self.refresh_line(self.cursor_row + 1)
            self.cursor_row = row
            self.refresh_line(row + 1)
            self.post_message(self.Highlighted(self, self._order[row]))
        visible = max(1, self.size.height - 1)
        top = self.scroll_offset.y
        if row < top:
            self.scroll_to(y=row, animate=False, immediate=True)
        elif row >= top + visible:
            self.scroll_to(y=row - visible + 1, animate=False, immediate=True)

    def action_cursor(self, delta: int) -> None:
        self.move_cursor(self.cursor_row + delta)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor_row + direction * max(1, self.size.height - 2))

    def action_jump(self, row: int) -> None:
        self.move_cursor(row if row >= 0 else len(self._order) - 1)

    def action_select(self) -> None:
        if self._order:
            self.post_message(self.Selected(self, self._order[self.cursor_row]))

    def on_click(self, event: events.Click) -> None:
        row = self.scroll_offset.y + event.y - 1
        if event.y >= 1 and 0 <= row < len(self._order):
            self.move_cursor(row)
            if event.chain >= 2:
                self.action_select()

    def on_resize(self, event: events.Resize) -> None:
        self._columns = layout(self.size.width)
        self._resize()

    def on_focus(self) -> None:
        self.refresh_line(self.cursor_row + 1)

    def on_blur(self) -> None:
        self.refresh_line(self.cursor_row + 1)

    # -- rendering ---------------------------------------------------------------------------------

    def _elapsed(self, agent: AgentView) -> str:
        end = agent.ended_at if agent.ended_at is not None else self._now
        return fmt.duration(end - agent.started_at if agent.started_at is not None else None)

    def _render_cells(self, agent: AgentView, elapsed: str) -> Cells:
        out: list[Text] = []
        for label, width in self._columns:
            if label == "agent":
                text = Text(fmt.icon(agent.status) + " ", style=fmt.style(agent.status))
                text.append(fmt.clip(agent.name, width - 2))
            elif label == "task":
                text = Text(fmt.clip(agent.task_title or f"({agent.role})", width))
            elif label == "step":
                text = Text(str(agent.step))
            elif label == "last action":
                text = Text(fmt.clip(agent.last_action, width))
            elif label == "tokens":
                text = Text(f"{fmt.tokens(agent.prompt_tokens)}/{fmt.tokens(agent.completion_tokens)}")
            else:
                text = Text(elapsed)
            out.append(text)
        return tuple(out)

    def _line(self, cells: tuple[Text, ...], width: int, style: Style, post: Style | None = None) -> Strip:
        line = Text(no_wrap=True, end="")
        for (_, w), cell in zip(self._columns, cells, strict=True):
            cell = cell.copy()
            cell.truncate(w, overflow="ellipsis", pad=True)
            line.append(" ")
            line.append_text(cell)
            line.append(" ")
        segments = Segment.apply_style(line.render(self.app.console), style, post)
        return Strip(list(segments)).crop_extend(0, width, style)

    def render_lines(self, crop: Region) -> list[Strip]:
        self._base = self.rich_style  # computed once per repaint, not once per line
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self._base
        if y == 0:
            key: tuple[object, ...] = (width, self._columns, base)
            if self._header is None or self._header[0] != key:
                style = base + self.get_component_rich_style("workers-table--header")
                header = tuple(Text(label) for label, _ in self._columns)
                self._header = (key, self._line(header, width, style))
            return self._header[1]
        row = self.scroll_offset.y + y - 1
        if not 0 <= row < len(self._order):
            return Strip.blank(width, base)
        agent = self._agents[self._order[row]]
        cursor = row == self.cursor_row
        elapsed = self._elapsed(agent)
        key = (agent, elapsed, width, self._columns, cursor, cursor and self.has_focus, base)
        cached = self._strips.get(agent.id)
        if cached is None or cached[0] != key:
            post = (
                self.get_component_rich_style("workers-table--cursor") if cursor and self.has_focus else None
            )
            if cursor and not self.has_focus:
                post = Style(underline=True)
            cached = (key, self._line(self._render_cells(agent, elapsed), width, base, post))
            self._strips[agent.id] = cached
        return cached[1]
