"""One structured question to a model on behalf of an agent, with its tokens counted and format errors retried.

A reply that breaks the schema is shown back to the model with what was wrong (small models usually fix it on
the next try); past ``FORMAT_RETRIES`` the :class:`ReplyFormatError` goes to the caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel

from ..model.client import ReplyFormatError

if TYPE_CHECKING:
    from ..session.engine import Engine
    from ..session.state import Agent

FORMAT_RETRIES = 2
M = TypeVar("M", bound=BaseModel)


async def ask(
    engine: Engine, agent: Agent, role: str, messages: list[dict[str, str]], name: str, schema: type[M]
) -> M:
    settings = engine.settings.role(role)
    messages = list(messages)
    for attempt in range(FORMAT_RETRIES + 1):
        try:
            reply = await engine.client.complete(
                settings, messages, name, schema, role=role, agent_id=agent.id
            )
            return reply.data  # type: ignore[return-value]
        except ReplyFormatError as exc:
            if attempt == FORMAT_RETRIES:
                raise
            messages += [
                {"role": "assistant", "content": exc.content[:4000]},
                {
                    "role": "user",
                    "content": f"That reply was rejected: {exc.reason}. Reply again with JSON only.",
                },
            ]
    raise AssertionError("unreachable")
