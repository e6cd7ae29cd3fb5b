"""The named JSON schemas planners and the judge reply under (``plan``, ``verdict``).

Kept flat and small: llama-server turns them into grammars, and a 1.5B model fills short flat objects reliably.
The worker's ``action`` schema lives with the actions it names (agents/actions.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PlannedTask(_Reply):
    title: str = Field(description="Short imperative title, under 80 characters.")
    instructions: str = Field(
        description="What to do, end to end, so a worker who knows nothing else can do it."
    )
    files: list[str] = Field(description="Files expected to change or be created.")
    check: str = Field(description="How to check the work, e.g. a test command. Empty if none.")


class SubplannerScope(_Reply):
    title: str = Field(description="Name of the area.")
    scope: str = Field(description="What this sub-planner owns and should plan, in detail.")


class Plan(_Reply):
    """A planner's reply: rewritten scratchpad, tasks for workers, and areas for sub-planners."""

    scratchpad: str = Field(description="Your notes for the next round, rewritten in full (not appended).")
    tasks: list[PlannedTask]
    subplanners: list[SubplannerScope]


class Verdict(_Reply):
    """The judge's decision at the end of a cycle."""

    decision: Literal["continue", "done"]
    reason: str
    notes: str = Field(description="What the next cycle's planner should know or do.")
