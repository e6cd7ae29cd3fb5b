"""``formicary doctor``: is every configured endpoint reachable, serving the model, and answering under a schema?

For each distinct endpoint: GET ``/models``; the served context length from whichever of llama-server ``/props``,
Ollama ``/api/show`` or vLLM's ``max_model_len`` answers; then one real chat call under a JSON schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .agents.settings import ROLES, ModelSettings, Settings


class Ping(BaseModel):
    """The tiny schema the doctor asks for: proves response_format json_schema is honoured."""

    ok: bool
    word: str


@dataclass
class EndpointReport:
    endpoint: str
    roles: list[str]
    model: str
    reachable: bool = False
    model_listed: bool | None = None
    context_length: int | None = None
    schema_ok: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.reachable and self.schema_ok and self.model_listed is not False


def _root(base_url: str) -> str:
    return base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url


async def _context_length(http: Any, base_url: str, model: str, models_json: dict[str, Any]) -> int | None:
    for item in models_json.get("data", []) or []:
        if isinstance(item, dict) and item.get("max_model_len"):  # vLLM
            return int(item["max_model_len"])
    root = _root(base_url)
    try:
        props = await http.get(f"{root}/props")  # llama-server
        if props.status_code == 200:
            body = props.json()
            n_ctx = body.get("default_generation_settings", {}).get("n_ctx") or body.get("n_ctx")
            if n_ctx:
                return int(n_ctx)
    except Exception:
        pass
    try:
        show = await http.post(f"{root}/api/show", json={"model": model})  # Ollama
        if show.status_code == 200:
            body = show.json()
            for key, value in (body.get("model_info") or {}).items():
                if key.endswith(".context_length"):
                    return int(value)
    except Exception:
        pass
    return None


async def check_endpoint(settings: ModelSettings, roles: list[str], base_url: str) -> EndpointReport:
    """Probe one endpoint; never raises, every problem becomes a line in the report."""

    import httpx

    from .agents.model.client import ModelClient, ModelError
    from .agents.model.preflight import auth_headers

    report = EndpointReport(endpoint=base_url or settings.endpoint, roles=roles, model=settings.model)
    listing_problem = ""
    if settings.api == "openai":
        async with httpx.AsyncClient(timeout=10, headers=auth_headers(settings)) as http:
            try:
                listing = await http.get(f"{base_url}/models")
            except httpx.HTTPError as exc:
                report.problems.append(f"not reachable at {base_url}/models: {type(exc).__name__}")
                return report
            report.reachable = True
            try:
                models_json = listing.json() if listing.status_code == 200 else None
            except ValueError:
                models_json = None
            if isinstance(models_json, dict):
                await _check_listing(http, report, settings, base_url, models_json)
            else:  # said once below, by the schema request, unless that one works
                listing_problem = (
                    f"GET {base_url}/models answered HTTP {listing.status_code}, not a model list"
                )
    else:
        report.reachable = True
    client = ModelClient(embedded_base_url=base_url or None)
    quick = settings.model_copy(
        update={"retries": 0, "max_tokens": 64, "timeout": min(settings.timeout, 120), "outage_limit": 5.0}
    )
    try:
        await client.complete(
            quick,
            [{"role": "user", "content": 'Reply with JSON: {"ok": true, "word": "ready"}'}],
            "ping",
            Ping,
            role="doctor",
        )
        report.schema_ok = True
        if listing_problem:
            report.problems.append(listing_problem)
    except ModelError as exc:
        report.problems.append(f"schema request failed: {exc.reason}")
    finally:
        await client.aclose()
    return report


async def _check_listing(
    http: Any, report: EndpointReport, settings: ModelSettings, base_url: str, models_json: dict[str, Any]
) -> None:
    """Is the model served, and is the server's context at least the configured one?"""
    ids = [m.get("id") for m in models_json.get("data", []) or [] if isinstance(m, dict)]
    report.model_listed = settings.model in ids or len(ids) == 1  # llama-server serves one, any name
    if not report.model_listed:
        report.problems.append(
            f"model {settings.model!r} not served (served: {', '.join(map(str, ids[:5]))})"
        )
    report.context_length = await _context_length(http, base_url, settings.model, models_json)
    if report.context_length and report.context_length < settings.context_length:
        report.problems.append(
            f"server context {report.context_length} < configured context_length "
            f"{settings.context_length}: lower it or start the server with a larger context"
        )


def endpoints(settings: Settings) -> dict[str, tuple[ModelSettings, list[str]]]:
    """Distinct endpoints (every server of every role's pool) and the roles that use each."""
    found: dict[str, tuple[ModelSettings, list[str]]] = {}
    for role in ROLES:
        model = settings.role(role)
        servers = [
            model.model_copy(
                update={
                    "base_url": s.base_url,
                    "endpoints": [],
                    "model": s.model,
                    "api_key_env": s.api_key_env,
                }
            )
            for s in model.servers()
        ]
        for server in servers or [model]:
            key = f"{server.api}|{server.base_url}|{server.model}"
            if key in found:
                found[key][1].append(role)
            else:
                found[key] = (server, [role])
    return found


async def check_all(settings: Settings) -> list[EndpointReport]:
    """Probe every distinct endpoint; the embedded one is started for the check when it is configured."""
    reports = []
    for model, roles in endpoints(settings).values():
        if model.api == "openai" and not model.base_url:
            reports.append(await _check_embedded(model, roles))
        else:
            reports.append(await check_endpoint(model, roles, model.base_url))
    return reports


async def _check_embedded(model: ModelSettings, roles: list[str]) -> EndpointReport:
    from .agents.model.server import EmbeddedServer, ServerError, embedded_status

    status = embedded_status()
    if not status.ready:
        report = EndpointReport(endpoint="embedded", roles=roles, model=model.model)
        report.problems.append(f"{status.reason}; run `formicary model setup`")
        return report
    try:
        async with EmbeddedServer() as server:
            base_url = server.base_url
            report = await check_endpoint(model, roles, base_url)
    except ServerError as exc:
        report = EndpointReport(endpoint="embedded", roles=roles, model=model.model)
        report.problems.append(str(exc))
        return report
    report.endpoint = f"embedded {base_url}"
    return report
