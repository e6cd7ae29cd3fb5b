"""One structured question to a model on behalf of an agent, with its tokens counted and format errors retried.

A reply that breaks the schema is shown back to the model with what was wrong (small models usually fix it on
the next try); past ``retries`` the :class:`ReplyFormatError` goes to the caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel

from ..model.client import Reply, ReplyFormatError

if TYPE_CHECKING:
    from ..settings import ModelSettings
    from .context import Agent, RoleContext

FORMAT_RETRIES = 2
M = TypeVar("M", bound=BaseModel)


async def ask_once(
    ctx: RoleContext,
    agent: Agent,
    role: str,
    messages: list[dict[str, str]],
    name: str,
    schema: type[BaseModel],
    settings: ModelSettings | None = None,
) -> Reply:
    """One call under ``schema``: the reply with its validated ``data``, or :class:`ReplyFormatError`."""
    return await ctx.client.complete(
        settings or ctx.settings.role(role), messages, name, schema, role=role, agent_id=agent.id
    )


async def ask(
    ctx: RoleContext, agent: Agent, role: str, messages: list[dict[str, str]], name: str, schema: type[M]
) -> M:
    """The validated answer under ``schema``, showing a malformed reply back up to ``FORMAT_RETRIES`` times."""
    messages = list(messages)
    for attempt in range(FORMAT_RETRIES + 1):
        try:
            reply = await ask_once(ctx, agent, role, messages, name, schema)
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
