"""Before a session starts: does every configured endpoint answer at all? And the key header every probe sends.

``formicary doctor`` asks each endpoint much more (models, context, a schema reply); a session only needs to
know in seconds that a URL is not a typo. Both build the request the same way, here.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..settings import ModelSettings, Settings


class PreflightError(Exception):
    """Something a session needs before it changes anything is unusable (a model endpoint, the record, the
    check's program); the message says which and what to do."""


def auth_headers(settings: ModelSettings | Any) -> dict[str, str]:
    """The ``Authorization`` header for an endpoint (model settings, or one server of a pool: anything with
    ``api_key_env``), when its key variable is set."""
    if settings.api_key_env and os.environ.get(settings.api_key_env):
        return {"Authorization": f"Bearer {os.environ[settings.api_key_env]}"}
    return {}


async def preflight(settings: Settings, timeout: float = 5.0) -> None:
    """GET ``/models`` on every configured OpenAI-compatible endpoint, so a typo in a URL fails in seconds;
    a role fails only if none of its servers answers."""
    import httpx

    from ..settings import ROLES

    answered: dict[str, str] = {}  # base URL -> '' or what went wrong
    async with httpx.AsyncClient(timeout=timeout) as http:
        for role in ROLES:
            model = settings.role(role)
            servers = model.servers()
            if not servers or model.api != "openai":
                continue
            problems = []
            for server in servers:
                if server.base_url not in answered:
                    # Any answer will do: a refused key or an unknown model ends the session at its first
                    # call, with the reason recorded on the session row.
                    try:
                        await http.get(f"{server.base_url}/models", headers=auth_headers(server))
                        answered[server.base_url] = ""
                    except httpx.HTTPError as exc:
                        answered[server.base_url] = f"{server.base_url} ({type(exc).__name__})"
                if answered[server.base_url]:
                    problems.append(answered[server.base_url])
            if len(problems) == len(servers):  # one server of a pool may be down: the pool probes it back
                raise PreflightError(
                    f"model endpoint {', '.join(problems)} of the {role} is not reachable; start the server or "
                    "fix model.base_url (`formicary doctor` checks every endpoint)"
                )
