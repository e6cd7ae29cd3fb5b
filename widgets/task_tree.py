"""The task tree: cycles → planner → sub-planners → work tasks, with status icons and done/total counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.geometry import Size
from textual.reactive import Reactive
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from ..view import formatting as fmt
from .lines import content_size_changed

if TYPE_CHECKING:
    from ..view.views import CycleView, TaskView

KIND_MARK = {"planner": "◆ ", "subplanner": "◇ ", "work": ""}


def task_label(task: TaskView) -> Text:
    label = Text()
    label.append(fmt.icon(task.status) + " ", style=fmt.style(task.status))
    label.append(KIND_MARK.get(task.kind, ""), style="bold")
    if task.kind != "work":
        label.append(f"{task.done}/{task.total} ", style="bold cyan" if task.total else "grey50")
    label.append(fmt.clip(task.title, 200), style="" if task.status != "cancelled" else "grey50")
    if task.gate == "passed":  # the landing gate's last word on this task's work
        label.append("  gate ✔", style="green")
        if task.refusals:
            label.append(f" after {task.refusals} refused", style="grey62")
    elif task.gate:
        label.append(
            f"  gate ✘ {fmt.clip(task.gate, 80)}" + (f" ×{task.refusals}" if task.refusals > 1 else ""),
            style="red",
        )
    if task.kind == "work" and task.attempts > 1:
        label.append(f"  try {task.attempts}", style="grey62")
    return label


def cycle_label(cycle: CycleView) -> Text:
    label = Text()
    label.append(fmt.icon(cycle.status) + " ", style=fmt.style(cycle.status))
    label.append(f"Cycle {cycle.number}", style="bold")
    label.append(f"  {fmt.clip(cycle.reason, 200)}", style="grey62")
    return label


class TaskTree(Tree[str]):
    """Nodes carry the task id as data (cycle nodes carry None); labels are rebuilt only when a task changes.

    A node added changes the tree's content size; the pane's own size is set by the stylesheet, so that repaints
    the tree instead of laying out the screen (which, every few seconds on a busy session, cost the frames a key
    press waits for).
    """

    virtual_size: Reactive[Size] = Reactive(Size(0, 0), layout=False, repaint=False)

    def __init__(self, *, id: str | None = None) -> None:
        self._widths: dict[int, tuple[object, int]] = {}
        """Label width per node id, with the label it was measured on."""
        super().__init__("session", id=id)
        self.show_root = False
        self.auto_expand = False
        self.guide_depth = 3
        self._tasks: dict[str, TreeNode[str]] = {}
        self._cycles: dict[str, TreeNode[str]] = {}
        self._labels: dict[str, TaskView] = {}

    def watch_virtual_size(self, size: Size) -> None:
        content_size_changed(self, size)

    def _invalidate(self) -> None:
        """Tree's own, less its request for a layout of the screen."""
        self._clear_line_cache()
        self._updates += 1
        self.root._reset()
        self.refresh()

    def get_label_width(self, node: TreeNode[str]) -> int:
        """Measured once per label: adding a node rebuilds the tree's lines, which measures every label."""
        cached = self._widths.get(node.id)
        if cached is not None and cached[0] is node.label:
            return cached[1]
        width = super().get_label_width(node)
        self._widths[node.id] = (node.label, width)
        return width

    @property
    def task_count(self) -> int:
        return len(self._tasks)

    def has_task(self, task_id: str) -> bool:
        return task_id in self._tasks

    def task_node(self, task_id: str) -> TreeNode[str] | None:
        return self._tasks.get(task_id)

    def task(self, task_id: str) -> TaskView | None:
        """The task as last shown."""
        return self._labels.get(task_id)

    def current_root(self) -> TreeNode[str] | None:
        """The newest cycle's first task (its root planner), where the cursor starts."""
        for cycle in reversed(list(self._cycles.values())):
            if cycle.children:
                return cycle.children[0]
        return None

    def reset(self) -> None:
        """Forget every node (a full reload follows)."""
        self.clear()
        self._tasks.clear()
        self._cycles.clear()
        self._labels.clear()
        self._widths.clear()

    def add_cycles(self, cycles: list[CycleView]) -> None:
        """Add or relabel cycle nodes; a new cycle folds the older ones away."""
        for cycle in cycles:
            node = self._cycles.get(cycle.id)
            if node is None:
                for older in self._cycles.values():
                    older.collapse()
                self._cycles[cycle.id] = self.root.add(cycle_label(cycle), data=None, expand=True)
            else:
                node.set_label(cycle_label(cycle))

    def upsert(self, tasks: list[TaskView]) -> None:
        """Add new tasks under their parents (parents come first) and relabel the changed ones."""
        for task in tasks:
            node = self._tasks.get(task.id)
            if node is not None:
                if self._labels.get(task.id) != task:
                    node.set_label(task_label(task))
                    self._labels[task.id] = task
                continue
            parent = self._tasks.get(task.parent_id or "") or self._cycles.get(task.cycle_id) or self.root
            if task.kind == "work":
                node = parent.add_leaf(task_label(task), data=task.id)
            else:
                node = parent.add(task_label(task), data=task.id, expand=True)
            self._tasks[task.id] = node
            self._labels[task.id] = task
