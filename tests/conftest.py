"""Every test gets its own FORMICARY_HOME, so no test reads or writes the user's config, record or cache."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("formicary-home")
    monkeypatch.setenv("FORMICARY_HOME", str(home))
    monkeypatch.delenv("FORMICARY_DB", raising=False)
    monkeypatch.delenv("FORMICARY_CACHE", raising=False)
    for name in list(__import__("os").environ):
        if name.startswith("FORMICARY_") and "__" in name:
            monkeypatch.delenv(name)
    return home


@pytest.fixture
def anyio_backend():
    return "asyncio"
