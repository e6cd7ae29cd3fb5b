"""The named JSON schemas planners and the judge reply under (``plan``, ``verdict``).

Kept flat and small: llama-server turns them into grammars, and a 1.5B model fills short flat objects reliably.
The worker's ``action`` schema lives with the actions it names (agents/actions.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _capped(limit: int, description: str) -> Any:
    """A string field the grammar caps at ``limit`` characters (maxLength) and that is cut, not refused, when an
    endpoint ignores the cap: a small model otherwise fills its whole token budget with one field."""
    return Annotated[
        str,
        BeforeValidator(lambda v: v[:limit] if isinstance(v, str) else v),
        Field(description=description, json_schema_extra={"maxLength": limit}),
    ]


Title = _capped(100, "Short imperative title.")
Instructions = _capped(
    800, "What to do, end to end, so a worker who knows nothing else can do it; 1-3 sentences."
)
Scratchpad = _capped(600, "Your notes for the next round, rewritten in full (not appended); at most 5 lines.")


class PlannedTask(_Reply):
    title: Title
    instructions: Instructions
    files: list[str] = Field(description="Files expected to change or be created.")
    check: _capped(200, "How to check the work, e.g. a test command. Empty if none.")  # type: ignore[valid-type]


class SubplannerScope(_Reply):
    title: Title
    scope: Instructions


class Plan(_Reply):
    """A planner's reply: rewritten scratchpad, tasks for workers, and areas for sub-planners."""

    tasks: list[PlannedTask]
    subplanners: list[SubplannerScope]
    scratchpad: Scratchpad
    _again: set[str] = PrivateAttr(default_factory=set)
    """Titles planned again on purpose (named targets that landed but whose tests still fail); not in the schema."""


class Verdict(_Reply):
    """The judge's decision at the end of a cycle."""

    decision: Literal["continue", "done"]
    reason: _capped(400, "Why, in 1-2 sentences.")  # type: ignore[valid-type]
    notes: _capped(1000, "What the next cycle's planner should know or do.")  # type: ignore[valid-type]
