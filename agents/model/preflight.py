"""Before a session starts: does every configured endpoint answer at all? And the key header every probe sends.

``formicary doctor`` asks each endpoint much more (models, context, a schema reply); a session only needs to
know in seconds that a URL is not a typo. Both build the request the same way, here.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..settings import ModelSettings, Settings


class PreflightError(Exception):
    """A configured model endpoint does not answer; the message says which and what to do."""


def auth_headers(settings: ModelSettings) -> dict[str, str]:
    """The ``Authorization`` header for ``settings``' endpoint, when its key variable is set."""
    if settings.api_key_env and os.environ.get(settings.api_key_env):
        return {"Authorization": f"Bearer {os.environ[settings.api_key_env]}"}
    return {}


async def preflight(settings: Settings, timeout: float = 5.0) -> None:
    """GET ``/models`` on every configured OpenAI-compatible endpoint, so a typo in a URL fails in seconds."""
    import httpx

    from ..settings import ROLES

    urls = {settings.role(r).base_url: settings.role(r) for r in ROLES}
    async with httpx.AsyncClient(timeout=timeout) as http:
        for url, model in urls.items():
            if not url or model.api != "openai":
                continue
            # Any answer will do: a refused key or an unknown model ends the session at its first call, with
            # the reason recorded on the session row.
            try:
                await http.get(f"{url}/models", headers=auth_headers(model))
            except httpx.HTTPError as exc:
                raise PreflightError(
                    f"model endpoint {url} is not reachable ({type(exc).__name__}); start the server or fix "
                    "model.base_url (`formicary doctor` checks every endpoint)"
                ) from None
