"""What the line-API panes (agents table, agent log) share: a content size change without a screen layout."""

from __future__ import annotations

from textual.geometry import Size
from textual.scroll_view import ScrollView


def set_content_size(widget: ScrollView, size: Size) -> None:
    """Give a pane a new virtual size, repainting the pane only.

    Assigning ``virtual_size`` lays out the whole screen (every container and pane re-rendered), because a
    ScrollView's size may depend on its content. These panes are sized by the stylesheet, so only their
    scrollbars and scroll limits change: that is what a layout pass would update for them, done here in place.
    A change that shows or hides a scrollbar still lays out (Textual does so when its visibility flips).
    """
    if size == widget.virtual_size:
        return
    if not widget.is_mounted or not widget.container_size:
        widget.virtual_size = size  # before the first layout there is nothing to spare
        return
    widget.set_reactive(ScrollView.virtual_size, size)
    content_size_changed(widget, size)


def content_size_changed(widget: ScrollView, size: Size) -> None:
    """Update the scrollbars and scroll limits for a new content size, as a layout pass would, and repaint."""
    if widget.is_mounted and widget.container_size:
        widget._scroll_update(size)
    widget.refresh()
