"""The texts a worker's request and action rows repeat, as the record rebuilds them (see :mod:`.derived`)."""

from __future__ import annotations

import json


def observation_request(step: int, action: str, observation: str) -> str:
    """The request a worker sends after a step when it adds only that step's observation (the worker loop's
    message, as the model client stores the new messages)."""
    message = {"role": "user", "content": f"OBSERVATION (step {step}, {action}):\n{observation}"}
    return json.dumps([message], ensure_ascii=False)


def reply_arguments(reply: str) -> str | None:
    """The arguments of the action a reply carries, as an ``actions`` row stores them (None: no action)."""
    try:
        action = json.loads(reply).get("action")
    except (ValueError, AttributeError):
        return None
    if not isinstance(action, dict):
        return None
    return json.dumps({k: v for k, v in action.items() if k != "name"}, ensure_ascii=False)
