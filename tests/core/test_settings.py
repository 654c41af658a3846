"""Invalid configuration fails at start with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import Settings, SettingsError, load_settings

CLI = [sys.executable, "-m", "cli.main"]


def test_defaults_are_the_embedded_stack(monkeypatch):
    for name in ("DATABASE_URL", "TEMPORAL_ADDRESS", "WEB_PORT", "DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)
    assert settings.embedded_postgres and settings.embedded_temporal
    assert settings.effective_temporal_address == "127.0.0.1:7233"
    assert settings.web_url == "http://127.0.0.1:8000"
    assert settings.effective_temporal_ui_url == "http://127.0.0.1:8233"
    assert settings.data_dir == Path(".agent-monitor")


def test_invalid_port_names_the_variable(monkeypatch):
    monkeypatch.setenv("WEB_PORT", "99999")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value).startswith("invalid configuration: WEB_PORT:")
    assert "\n" not in str(err.value)


def test_secret_bearing_values_are_not_echoed(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "mysql://root:hunter2@db/x")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "DATABASE_URL" in str(err.value)
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize(
    ("raw", "roots"),
    [("/a/dir", ["/a/dir"]), ("/a, /b/logs", ["/a", "/b/logs"]), ('["/a", "/b"]', ["/a", "/b"])],
)
def test_log_roots_take_the_documented_comma_separated_form(monkeypatch, raw, roots):
    monkeypatch.setenv("LOG_ROOTS", raw)
    assert load_settings().log_roots == [Path(root) for root in roots]


@pytest.mark.parametrize("name", ["LOG_ROOTS", "COMMAND_ALLOWLIST"])
def test_unparsable_list_setting_is_one_line(monkeypatch, name):
    monkeypatch.setenv(name, '["/a",')
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value).startswith(f"invalid configuration: {name}:")
    assert "\n" not in str(err.value)


def test_configured_secrets_are_not_shown():
    settings = Settings(_env_file=None, database_url="postgresql://app:hunter2@db/x")
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    assert not settings.embedded_postgres


def test_cli_exits_nonzero_with_one_line(tmp_path):
    env = {**os.environ, "LOG_LEVEL": "chatty", "DATA_DIR": str(tmp_path)}
    result = subprocess.run([*CLI, "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid configuration: LOG_LEVEL:")
