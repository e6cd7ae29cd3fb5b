"""Which repository ``formicary.toml`` files the operator trusts, by content hash, in the user data folder.

Why: a repository's own config is written by whoever wrote the repository (an untrusted clone, or an agent
whose commit landed on the shared branch). Untrusted, it may set limits, ``check_command`` and model names,
but nothing that loosens the sandbox or sends the operator's key elsewhere (:data:`SECURITY_KEYS`).
``formicary trust [REPO]`` records the file's SHA-256; any change to the file makes it untrusted again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .agents import paths

REPO_CONFIG_NAME = "formicary.toml"
SECURITY_KEYS = (
    "sandbox",
    "model.base_url",
    "model.api",
    "model.api_key_env",
    "roles.*.base_url",
    "roles.*.api",
    "roles.*.api_key_env",
    "roles.*.prompt",
)
"""Keys only the operator (user config, ``--config``, ``FORMICARY_*``) or a trusted repository file may set."""


def trust_file() -> Path:
    return paths.data_dir() / "trusted-configs.json"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read() -> dict[str, str]:
    try:
        raw = json.loads(trust_file().read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # an unreadable record trusts nothing
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def is_trusted(config: Path, data: bytes) -> bool:
    """True when ``config``'s current bytes ``data`` are exactly what the operator trusted."""
    return _read().get(str(config.resolve())) == digest(data)


def trust(config: Path) -> str:
    """Record ``config``'s current content as trusted; return its hash. Written atomically."""
    data = config.read_bytes()
    record = _read()
    record[str(config.resolve())] = value = digest(data)
    _write(record)
    return value


def forget(config: Path) -> bool:
    """Drop ``config`` from the record; True when it was there."""
    record = _read()
    if record.pop(str(config.resolve()), None) is None:
        return False
    _write(record)
    return True


def _write(record: dict[str, str]) -> None:
    target = trust_file()
    paths.ensure(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=".trusted-", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=1, sort_keys=True)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def security_keys_in(values: dict[str, Any]) -> list[str]:
    """The dotted keys of ``values`` (a parsed TOML file) that :data:`SECURITY_KEYS` reserves."""
    found: list[str] = []
    if "sandbox" in values:
        section = values["sandbox"]
        found += [f"sandbox.{k}" for k in section] if isinstance(section, dict) and section else ["sandbox"]
    model = values.get("model")
    if isinstance(model, dict):
        found += [f"model.{k}" for k in ("base_url", "api", "api_key_env") if k in model]
    roles = values.get("roles")
    if isinstance(roles, dict):
        for role, section in roles.items():
            if isinstance(section, dict):
                found += [
                    f"roles.{role}.{k}" for k in ("base_url", "api", "api_key_env", "prompt") if k in section
                ]
    return found
