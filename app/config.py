"""formicary's configuration: pydantic models with docstrings, loaded from TOML and the environment.

Sources, later ones win: built-in defaults → the user file (``<config dir>/config.toml``) → ``formicary.toml`` in
the target repository → ``--config FILE`` → ``FORMICARY_<SECTION>__<KEY>`` environment variables (for example
``FORMICARY_MODEL__BASE_URL`` or ``FORMICARY_ROLES__WORKER__MODEL``; a top-level key needs no section). A wrong config raises :class:`ConfigError`
whose message is one line naming the file and the key.

The repository's ``formicary.toml`` is not the operator's: until ``formicary trust`` recorded its exact content,
it may not set the security keys of :data:`formicary.trust.SECURITY_KEYS` (sandbox, endpoints, key names,
prompt paths). Every other source is the operator's and keeps full power.
"""

from __future__ import annotations

import os
import shlex
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .agents import paths
from .agents.settings import ROLES, ConfigError, ModelSettings, RoleSettings, Settings, redacted_dump

__all__ = [
    "ROLES",
    "ConfigError",
    "ModelSettings",
    "RoleSettings",
    "Settings",
    "load_settings",
    "redacted_dump",
]


# -- loading ------------------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _parse_toml(path: Path, data: bytes) -> dict[str, Any]:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    return _parse_toml(path, _read_bytes(path))


def _read_repo_config(repo: Path) -> dict[str, Any]:
    """The repository's ``formicary.toml``, refused when untrusted and it sets a security key."""
    from . import trust

    path = repo / trust.REPO_CONFIG_NAME
    data = _read_bytes(path)  # hashed and parsed from the same bytes: no change in between
    values = _parse_toml(path, data)
    reserved = trust.security_keys_in(values)
    if reserved and not trust.is_trusted(path, data):
        raise ConfigError(
            f"{path}: {reserved[0]} may only be set by a trusted repository config; "
            f"review the file, then run: formicary trust {shlex.quote(str(repo))}"
        )
    return values


def _merge(base: dict[str, Any], over: dict[str, Any], source: str, origins: dict[str, str], prefix=""):
    for key, value in over.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, source, origins, dotted + ".")
        else:
            base[key] = value
            _mark(value, dotted, source, origins)


def _mark(value: Any, dotted: str, source: str, origins: dict[str, str]) -> None:
    origins[dotted] = source
    if isinstance(value, dict):
        for k, v in value.items():
            _mark(v, f"{dotted}.{k}", source, origins)


PATH_VARIABLES = ("HOME", "CACHE", "DB")
"""``FORMICARY_HOME``, ``FORMICARY_CACHE``, ``FORMICARY_DB``: where files go (:mod:`formicary.agents.paths`)."""


def _env_keys(name: str) -> list[str] | None:
    """The config keys ``FORMICARY_…`` sets; None for a variable that is not a setting (a user's own
    ``FORMICARY_TEST_API_KEY``). A top-level key needs no section (``FORMICARY_CHECK_COMMAND``); a section's key
    without its section (``FORMICARY_WORKERS``) would be ignored without a word, so it is an error."""
    rest = name[len("FORMICARY_") :]
    if "__" in rest:
        return [k.lower() for k in rest.split("__") if k]
    key = rest.lower()
    fields = Settings.model_fields
    if key in fields and rest not in PATH_VARIABLES and isinstance(fields[key].default, (str, int, float)):
        return [key]
    for section in SECTIONS:
        if key in type(fields[section].default).model_fields and rest not in PATH_VARIABLES:
            raise ConfigError(
                f"{name} is not a setting: {section}.{key} is set by FORMICARY_{section.upper()}__{rest}"
            )
    return None


SECTIONS = tuple(
    name for name, field in Settings.model_fields.items() if hasattr(type(field.default), "model_fields")
)


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """``FORMICARY_A__B__C=v`` → ``{"a": {"b": {"c": v}}}``; values are parsed as TOML scalars when they can be."""
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith("FORMICARY_") or (keys := _env_keys(name)) is None or not keys:
            continue
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return out


def load_settings(
    repo: Path | None = None,
    config_file: Path | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Merge every source and validate; raise :class:`ConfigError` naming the file and key at fault."""
    environ = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    origins: dict[str, str] = {}
    sources: list[tuple[str, dict[str, Any]]] = []
    user_file = paths.user_config_file()
    if user_file.is_file():
        sources.append((str(user_file), _read_toml(user_file)))
    if repo is not None and (repo / "formicary.toml").is_file():
        sources.append((str(repo / "formicary.toml"), _read_repo_config(repo)))
    if config_file is not None:
        sources.append((str(config_file), _read_toml(Path(config_file))))
    env = _env_overrides(environ)
    if env:
        sources.append(("environment (FORMICARY_*)", env))
    for source, values in sources:
        _merge(data, values, source, origins)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        source = _origin_of(loc, origins) or "config"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        raise ConfigError(f"{source}: {loc}: {message}") from None


def _origin_of(loc: str, origins: dict[str, str]) -> str | None:
    parts = loc.split(".")
    while parts:
        found = origins.get(".".join(parts))
        if found:
            return found
        parts.pop()
    return next(iter(origins.values()), None)
