"""Config errors are one line naming the file and key; sources merge in the documented order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from formicary.agents import paths
from formicary.config import ConfigError, load_settings


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_any_file(tmp_path):
    settings = load_settings(repo=tmp_path, environ={})
    assert settings.limits.workers == 4
    assert settings.role("judge").model == settings.model.model
    assert settings.uses_embedded_server()


def test_sources_merge_in_order(tmp_path):
    write(paths.user_config_file(), '[model]\nmodel = "user"\ntemperature = 0.5\n')
    write(tmp_path / "formicary.toml", '[model]\nmodel = "repo"\n[roles.judge]\nmodel = "judge-model"\n')
    extra = write(tmp_path / "extra.toml", "[limits]\nworkers = 9\n")
    settings = load_settings(repo=tmp_path, config_file=extra, environ={"FORMICARY_LIMITS__CYCLES": "7"})
    assert settings.model.model == "repo"
    assert settings.model.temperature == 0.5
    assert settings.role("judge").model == "judge-model"
    assert settings.role("worker").model == "repo"
    assert settings.limits.workers == 9
    assert settings.limits.cycles == 7


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.toml: config file not found"):
        load_settings(repo=tmp_path, config_file=tmp_path / "nope.toml", environ={})


def test_bad_toml_names_the_file(tmp_path):
    bad = write(tmp_path / "formicary.toml", "[model\nmodel = 1\n")
    with pytest.raises(ConfigError) as err:
        load_settings(repo=tmp_path, environ={})
    assert str(bad) in str(err.value) and "not valid TOML" in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_key_names_file_and_key(tmp_path):
    cfg = write(tmp_path / "c.toml", "[limits]\nworkerz = 3\n")
    with pytest.raises(ConfigError) as err:
        load_settings(repo=tmp_path, config_file=cfg, environ={})
    assert str(err.value) == f"{cfg}: limits.workerz: unknown key"


def test_unknown_role(tmp_path):
    cfg = write(tmp_path / "c.toml", '[roles.boss]\nmodel = "x"\n')
    with pytest.raises(ConfigError, match=r"c.toml: roles: unknown role 'boss'"):
        load_settings(repo=tmp_path, config_file=cfg, environ={})


def test_bad_url_names_the_role_key(tmp_path):
    cfg = write(tmp_path / "c.toml", '[roles.worker]\nbase_url = "localhost:8080"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(repo=tmp_path, config_file=cfg, environ={})
    assert str(cfg) in str(err.value)
    assert "base_url" in str(err.value) and "http://" in str(err.value)


def test_bad_value_from_environment():
    with pytest.raises(ConfigError, match=r"environment \(FORMICARY_\*\): limits.workers"):
        load_settings(environ={"FORMICARY_LIMITS__WORKERS": "0"})


def test_missing_key_variable(tmp_path):
    cfg = write(
        tmp_path / "c.toml", '[model]\nbase_url = "http://127.0.0.1:1/v1"\napi_key_env = "NOPE_KEY"\n'
    )
    settings = load_settings(repo=tmp_path, config_file=cfg, environ={})
    with pytest.raises(ConfigError, match="roles.planner.api_key_env names NOPE_KEY, which is not set"):
        settings.check_keys()


def test_a_key_instead_of_a_variable_name_is_refused(tmp_path):
    cfg = write(tmp_path / "c.toml", '[model]\napi_key_env = "sk-abc.def/ghi"\n')
    with pytest.raises(ConfigError, match="NAME of an environment variable"):
        load_settings(repo=tmp_path, config_file=cfg, environ={})


def test_home_moves_every_user_path(tmp_path, monkeypatch):
    monkeypatch.setenv("FORMICARY_HOME", str(tmp_path))
    for folder in (paths.config_dir(), paths.data_dir(), paths.cache_dir(), paths.default_db_path()):
        assert folder.is_relative_to(tmp_path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[limits\n", "not valid TOML"),
        ("[limits]\nbogus = 1\n", "limits.bogus: unknown key"),
        ('[model]\nbase_url = "ftp://x"\n', "model.base_url: must start with http://"),
    ],
)
def test_cli_config_error_is_one_line_exit_2(tmp_path, content, expected):
    cfg = write(tmp_path / "bad.toml", content)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "formicary",
            "run",
            "--repo",
            str(tmp_path),
            "--goal",
            "x",
            "--config",
            str(cfg),
            "--headless",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
