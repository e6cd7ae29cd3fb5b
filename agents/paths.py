"""Every user path formicary touches, in one place.

Paths come from platformdirs; ``FORMICARY_HOME`` moves all of them (config, data, cache) under one folder,
for tests and portable installs. Nothing here creates a directory at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "formicary"


def _home() -> Path | None:
    value = os.environ.get("FORMICARY_HOME")
    return Path(value).expanduser() if value else None


def config_dir() -> Path:
    """Folder of the user config file (``config.toml``)."""
    home = _home()
    if home:
        return home / "config"
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME))


def data_dir() -> Path:
    """Folder of the SQLite record and session worktrees."""
    home = _home()
    if home:
        return home / "data"
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME))


def cache_dir() -> Path:
    """Folder of the downloaded model and the built llama-server (``FORMICARY_CACHE`` overrides it alone)."""
    value = os.environ.get("FORMICARY_CACHE")
    if value:
        return Path(value).expanduser()
    home = _home()
    if home:
        return home / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME))


def user_config_file() -> Path:
    return config_dir() / "config.toml"


def default_db_path() -> Path:
    """The SQLite file every session is recorded in (``FORMICARY_DB`` overrides it)."""
    value = os.environ.get("FORMICARY_DB")
    return Path(value).expanduser() if value else data_dir() / "formicary.db"


def worktrees_dir(session_id: str) -> Path:
    """Where a session's per-task worktrees live: outside the target repository's work tree."""
    return data_dir() / "worktrees" / session_id


def ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
